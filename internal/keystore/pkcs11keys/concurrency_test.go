package pkcs11keys

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"sync"
	"testing"

	"github.com/outpost-pki/outpost/internal/keystore"
	"github.com/outpost-pki/outpost/testbed"
)

// TestGenerateWhileSigning generates keys on the token while other
// goroutines sign, list and load. SoftHSM2's file object store is known to
// fail object creation (CKR_GENERAL_ERROR) when other sessions of the same
// process touch the token at that moment; the control plane does exactly
// that when an admin creates a CA while CRLs are being signed.
func TestGenerateWhileSigning(t *testing.T) {
	h := testbed.NewSoftHSM(t)
	s := open(t, h)
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	signer, err := s.Generate(ctx, "busy", keystore.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("crl"))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				switch i % 4 {
				case 0, 1:
					_, err = signer.Sign(rand.Reader, digest[:], crypto.SHA256)
				case 2:
					_, err = s.Load(ctx, "busy")
				case 3:
					_, err = s.List(ctx)
				}
				if err != nil {
					select {
					case errs <- fmt.Errorf("worker %d: %w", i, err):
					default:
					}
					return
				}
			}
		}(i)
	}
	for i := 0; i < 40; i++ {
		if _, err := s.Generate(ctx, fmt.Sprintf("ca-%d", i), keystore.ECDSAP256); err != nil {
			t.Errorf("generating key %d while the token is busy: %v", i, err)
			break
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
