package crl

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Extension OIDs (RFC 5280 5.2).
var (
	oidIssuingDistributionPoint = asn1.ObjectIdentifier{2, 5, 29, 28}
	oidDeltaCRLIndicator        = asn1.ObjectIdentifier{2, 5, 29, 27}
	oidFreshestCRL              = asn1.ObjectIdentifier{2, 5, 29, 46}
)

// template is everything one CRL is made of. It is the protocol core of
// the package: no database, no HTTP.
type template struct {
	issuer *x509.Certificate
	signer crypto.Signer
	number int64
	// thisUpdate and nextUpdate are truncated to seconds by build.
	thisUpdate, nextUpdate time.Time
	// idpURL goes into issuingDistributionPoint; empty: no IDP.
	idpURL string
	// freshestURL goes into freshestCRL (full CRLs only); empty: none.
	freshestURL string
	// baseNumber > 0 makes a delta CRL.
	baseNumber int64
	entries    []x509.RevocationListEntry
}

// build signs a CRL and returns its DER.
func build(t *template) ([]byte, error) {
	if t.number < 1 {
		return nil, fmt.Errorf("crl: number %d is not positive", t.number)
	}
	var exts []pkix.Extension
	if t.idpURL != "" {
		v, err := idpValue(t.idpURL)
		if err != nil {
			return nil, err
		}
		// RFC 5280 5.2.5: the IDP is a critical extension.
		exts = append(exts, pkix.Extension{Id: oidIssuingDistributionPoint, Critical: true, Value: v})
	}
	if t.baseNumber > 0 {
		if t.freshestURL != "" {
			// RFC 5280 5.2.6: freshestCRL MUST NOT appear in delta CRLs.
			return nil, errors.New("crl: a delta CRL cannot name a freshest CRL")
		}
		v, err := asn1.Marshal(big.NewInt(t.baseNumber))
		if err != nil {
			return nil, err
		}
		// RFC 5280 5.2.4: deltaCRLIndicator is critical.
		exts = append(exts, pkix.Extension{Id: oidDeltaCRLIndicator, Critical: true, Value: v})
	}
	if t.freshestURL != "" {
		v, err := freshestValue(t.freshestURL)
		if err != nil {
			return nil, err
		}
		exts = append(exts, pkix.Extension{Id: oidFreshestCRL, Value: v})
	}
	tmpl := &x509.RevocationList{
		Number:                    big.NewInt(t.number),
		ThisUpdate:                t.thisUpdate.UTC().Truncate(time.Second),
		NextUpdate:                t.nextUpdate.UTC().Truncate(time.Second),
		ExtraExtensions:           exts,
		RevokedCertificateEntries: t.entries,
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, t.issuer, t.signer)
	if err != nil {
		return nil, fmt.Errorf("signing the crl: %w", err)
	}
	return der, nil
}

// reasonCode maps a stored revocation reason to the CRL entry's
// reasonCode: 0 (unspecified, which RFC 5280 5.3.1 says to leave out, as
// x509 does for 0), and values that are not reasons for a revoked entry
// (7 is unused, 8 removeFromCRL belongs to deltas of held certificates,
// which Outpost does not have) become 0.
func reasonCode(stored *int32) int {
	if stored == nil {
		return 0
	}
	switch r := int(*stored); r {
	case 1, 2, 3, 4, 5, 6, 9, 10:
		return r
	}
	return 0
}

// entryFor turns a stored revoked row into a CRL entry.
func entryFor(serialHex string, revokedAt time.Time, reason *int32) (x509.RevocationListEntry, error) {
	n, ok := new(big.Int).SetString(serialHex, 16)
	if !ok || n.Sign() <= 0 {
		return x509.RevocationListEntry{}, fmt.Errorf("crl: serial %q is not a positive hex number", serialHex)
	}
	return x509.RevocationListEntry{
		SerialNumber:   n,
		RevocationTime: revokedAt.UTC().Truncate(time.Second),
		ReasonCode:     reasonCode(reason),
	}, nil
}

// addDistributionPointName adds a DistributionPointName holding one URI:
//
//	distributionPoint [0] DistributionPointName  -- explicit: a CHOICE
//	DistributionPointName ::= CHOICE { fullName [0] GeneralNames, ... }
//	GeneralName ::= CHOICE { ..., uniformResourceIdentifier [6] IA5String, ... }
//
// in the implicitly tagged PKIX module: a0 { a0 { 86 url } }.
func addDistributionPointName(b *cryptobyte.Builder, uri string) {
	b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) {
				b.AddBytes([]byte(uri))
			})
		})
	})
}

func checkIA5(s string) error {
	if s == "" {
		return errors.New("crl: empty url")
	}
	for i := 0; i < len(s); i++ {
		if s[i] > 0x7f {
			return fmt.Errorf("crl: url %q is not IA5 (ASCII)", s)
		}
	}
	return nil
}

// idpValue is the DER of IssuingDistributionPoint with only a
// distributionPoint fullName (RFC 5280 5.2.5):
//
//	IssuingDistributionPoint ::= SEQUENCE { distributionPoint [0] ..., ... }
func idpValue(uri string) ([]byte, error) {
	if err := checkIA5(uri); err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		addDistributionPointName(b, uri)
	})
	return b.Bytes()
}

// freshestValue is the DER of FreshestCRL ::= CRLDistributionPoints, one
// DistributionPoint with a fullName (RFC 5280 5.2.6, 4.2.1.13).
func freshestValue(uri string) ([]byte, error) {
	if err := checkIA5(uri); err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addDistributionPointName(b, uri)
		})
	})
	return b.Bytes()
}

// parseDistributionPointURI reads back the URI of an idpValue (freshest
// false) or freshestValue (freshest true); for tests and diagnostics.
func parseDistributionPointURI(der []byte, freshest bool) (string, error) {
	in := cryptobyte.String(der)
	var seq, dp, dpn, fullName, uri cryptobyte.String
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() {
		return "", errors.New("crl: not a SEQUENCE")
	}
	if freshest {
		if !seq.ReadASN1(&dp, cbasn1.SEQUENCE) || !seq.Empty() {
			return "", errors.New("crl: want one DistributionPoint")
		}
		seq = dp
	}
	if !seq.ReadASN1(&dpn, cbasn1.Tag(0).Constructed().ContextSpecific()) ||
		!dpn.ReadASN1(&fullName, cbasn1.Tag(0).Constructed().ContextSpecific()) ||
		!fullName.ReadASN1(&uri, cbasn1.Tag(6).ContextSpecific()) || !fullName.Empty() || !dpn.Empty() {
		return "", errors.New("crl: want distributionPoint fullName with one URI")
	}
	return string(uri), nil
}

// isSelfSigned reports whether c is a self-signed certificate (a root).
func isSelfSigned(c *x509.Certificate) bool {
	return string(c.RawIssuer) == string(c.RawSubject) && c.CheckSignatureFrom(c) == nil
}
