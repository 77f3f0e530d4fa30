package ctlcmd

import (
	"fmt"
	"io"
	"os"

	"github.com/outpost-pki/outpost/internal/fsutil"
)

// readFileCapped reads a whole file of at most max bytes.
func readFileCapped(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return data, nil
}

// writeOut writes data to path (mode 0644: certificates and chains are
// public), or to standard output when path is empty.
func (r *run) writeOut(path string, data []byte) error {
	if path == "" {
		_, err := r.stdout.Write(data)
		return err
	}
	if err := fsutil.WriteFile(path, data, 0o644, true); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
