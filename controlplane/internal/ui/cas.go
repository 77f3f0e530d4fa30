package ui

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"sort"
	"strings"

	"github.com/google/uuid"
	"github.com/youmark/pkcs8"

	"github.com/outpost-pki/outpost/controlplane/internal/caservice"
	"github.com/outpost-pki/outpost/controlplane/internal/registry"
)

// maxTreeCAs bounds the CA tree page (edge CAs add one per DMS; a tree of
// thousands is not readable anyway).
const maxTreeCAs = 2000

// reasons are the RFC 5280 reasons offered when revoking.
var reasons = []string{"unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded", "cessationOfOperation", "certificateHold", "privilegeWithdrawn", "aACompromise"}

// caNode is a CA in the hierarchy tree.
type caNode struct {
	CA       *registry.CA
	Children []*caNode
}

type casData struct {
	Roots     []*caNode
	Parents   []*registry.CA // CAs that can sign a new intermediate
	Truncated bool
	Total     int
}

// allCAs pages through the CAs in creation order, up to maxTreeCAs.
func (s *Server) allCAs(r *http.Request) ([]*registry.CA, bool, error) {
	var out []*registry.CA
	cur := ""
	for {
		cas, next, err := s.reg.ListCAs(r.Context(), cur, registry.MaxLimit)
		if err != nil {
			return nil, false, err
		}
		out = append(out, cas...)
		if next == "" {
			return out, false, nil
		}
		if len(out) >= maxTreeCAs {
			return out, true, nil
		}
		cur = next
	}
}

func (s *Server) casPage(w http.ResponseWriter, r *http.Request, sess *session) error {
	cas, truncated, err := s.allCAs(r)
	if err != nil {
		return err
	}
	d := &casData{Truncated: truncated, Total: len(cas)}
	nodes := map[uuid.UUID]*caNode{}
	for _, ca := range cas {
		nodes[ca.ID] = &caNode{CA: ca}
	}
	for _, ca := range cas {
		n := nodes[ca.ID]
		if ca.ParentID != nil {
			if p, ok := nodes[*ca.ParentID]; ok {
				p.Children = append(p.Children, n)
				continue
			}
		}
		d.Roots = append(d.Roots, n)
	}
	for _, ca := range cas {
		if ca.Status == "active" && ca.KeyRef != nil && ca.Kind != "edge" {
			d.Parents = append(d.Parents, ca)
		}
	}
	sort.SliceStable(d.Parents, func(i, j int) bool { return d.Parents[i].Name < d.Parents[j].Name })
	s.render(w, r, http.StatusOK, "cas", &page{Title: "Certificate authorities", Nav: "cas", Data: d})
	return nil
}

type caData struct {
	CA       *registry.CA
	Parent   *registry.CA
	Children []*registry.CA
	Cert     *certInfo
	CRLURL   string
	Reasons  []string
	// Revocable: the dashboard offers revocation (not the control
	// plane's own CAs, not already revoked).
	Revocable bool
}

func (s *Server) caPage(w http.ResponseWriter, r *http.Request, sess *session) error {
	id, err := pathUUID(r, "id")
	if err != nil {
		return err
	}
	ctx := r.Context()
	ca, err := s.reg.GetCA(ctx, id)
	if err != nil {
		return err
	}
	d := &caData{CA: ca, CRLURL: s.opts.CRLPrefix + ca.ID.String() + ".crl", Reasons: reasons,
		Revocable: ca.Role == nil && ca.Status != "revoked"}
	if ca.ParentID != nil {
		if d.Parent, err = s.reg.GetCA(ctx, *ca.ParentID); err != nil {
			return err
		}
	}
	rows, err := s.pool.Query(ctx, `SELECT id FROM cas WHERE parent_id = $1 ORDER BY created_at, id LIMIT 500`, id)
	if err != nil {
		return err
	}
	var kids []uuid.UUID
	for rows.Next() {
		var k uuid.UUID
		if err := rows.Scan(&k); err != nil {
			rows.Close()
			return err
		}
		kids = append(kids, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, k := range kids {
		c, err := s.reg.GetCA(ctx, k)
		if err != nil {
			return err
		}
		d.Children = append(d.Children, c)
	}
	d.Cert = decodeCert(ca.CertDER)
	s.render(w, r, http.StatusOK, "ca", &page{Title: "CA " + ca.Name, Nav: "cas", Data: d})
	return nil
}

func (s *Server) caChain(w http.ResponseWriter, r *http.Request, sess *session) error {
	id, err := pathUUID(r, "id")
	if err != nil {
		return err
	}
	var b strings.Builder
	var name string
	seen := map[uuid.UUID]bool{}
	for next := &id; next != nil && !seen[*next]; {
		seen[*next] = true
		ca, err := s.reg.GetCA(r.Context(), *next)
		if err != nil {
			return err
		}
		if name == "" {
			name = ca.Name
		}
		b.WriteString(caservice.CertPEM(ca.CertDER))
		next = ca.ParentID
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Header().Set("Content-Disposition", `attachment; filename="`+fileName(name)+`-chain.pem"`)
	_, _ = w.Write([]byte(b.String()))
	return nil
}

// fileName keeps what is safe in a download's file name.
func fileName(s string) string {
	var b strings.Builder
	for _, c := range s {
		if c < 0x80 && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "ca"
	}
	return b.String()
}

func (s *Server) createCA(w http.ResponseWriter, r *http.Request, sess *session) error {
	parent, err := optUUID("parent_id", r.PostFormValue("parent_id"))
	if err != nil {
		return err
	}
	if parent == nil && sess.Role < RoleAdmin {
		return &httpError{Status: http.StatusForbidden, Field: "parent_id",
			Message: "Creating a root CA needs the admin role; operators may create intermediates (choose a parent CA)."}
	}
	validity, err := formInt(r, "validity_days", 0, 1, 36500)
	if err != nil {
		return err
	}
	var maxPath *int
	if strings.TrimSpace(r.PostFormValue("max_path_len")) != "" {
		n, err := formInt(r, "max_path_len", 0, -1, 16)
		if err != nil {
			return err
		}
		maxPath = &n
	}
	ca, err := s.svc.CreateCA(r.Context(), sess.actor(), caservice.CreateCARequest{
		Name: strings.TrimSpace(r.PostFormValue("name")), ParentID: parent, CommonName: strings.TrimSpace(r.PostFormValue("common_name")),
		KeyAlgorithm: r.PostFormValue("key_algorithm"), ValidityDays: validity, MaxPathLen: maxPath,
	})
	if err != nil {
		return err
	}
	redirect(w, r, PathPrefix+"/cas/"+ca.ID.String(), "ca-created")
	return nil
}

func (s *Server) importCA(w http.ResponseWriter, r *http.Request, sess *session) error {
	certPEM := r.PostFormValue("certificate_pem")
	if strings.TrimSpace(certPEM) == "" {
		return badField("certificate_pem", "certificate_pem is required: paste the CA certificate (PEM).")
	}
	cert, err := caservice.ParseCertificatePEM([]byte(strings.TrimSpace(certPEM)))
	if err != nil {
		return badField("certificate_pem", "certificate_pem: "+err.Error()+".")
	}
	key, err := parseKeyPEM(r.PostFormValue("key_pem"), r.PostFormValue("key_passphrase"))
	if err != nil {
		return err
	}
	ca, err := s.svc.ImportCA(r.Context(), sess.actor(), strings.TrimSpace(r.PostFormValue("name")), cert, key)
	if err != nil {
		return err
	}
	redirect(w, r, PathPrefix+"/cas/"+ca.ID.String(), "ca-imported")
	return nil
}

// parseKeyPEM reads an optional private key: PKCS#8 (encrypted with the
// passphrase, or not), or SEC 1 / PKCS#1 as the API accepts.
func parseKeyPEM(keyPEM, passphrase string) (crypto.Signer, error) {
	if strings.TrimSpace(keyPEM) == "" {
		return nil, nil
	}
	block, _ := pem.Decode([]byte(strings.TrimSpace(keyPEM)))
	if block == nil {
		return nil, badField("key_pem", "key_pem holds no PEM block.")
	}
	var k any
	var err error
	if block.Type == "ENCRYPTED PRIVATE KEY" {
		k, err = pkcs8.ParsePKCS8PrivateKey(block.Bytes, []byte(passphrase))
	} else {
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			if ek, e2 := x509.ParseECPrivateKey(block.Bytes); e2 == nil {
				k, err = ek, nil
			} else if rk, e3 := x509.ParsePKCS1PrivateKey(block.Bytes); e3 == nil {
				k, err = rk, nil
			}
		}
	}
	if err != nil {
		return nil, badField("key_pem", "key_pem could not be read (wrong passphrase, or not a PKCS#8, SEC 1 or PKCS#1 key).")
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, badField("key_pem", "key_pem is not a signing key.")
	}
	return signer, nil
}

func (s *Server) revokeCA(w http.ResponseWriter, r *http.Request, sess *session) error {
	id, err := pathUUID(r, "id")
	if err != nil {
		return err
	}
	reason, err := caservice.ParseReason(r.PostFormValue("reason"))
	if err != nil {
		return err
	}
	if _, _, err := s.svc.RevokeCA(r.Context(), sess.actor(), id, reason); err != nil {
		return err
	}
	redirect(w, r, PathPrefix+"/cas/"+id.String(), "ca-revoked")
	return nil
}
