// Package fsutil writes files so that a power cut leaves either the old
// state or the new one, never a torn file: state on gateways must survive
// being unplugged.
package fsutil

import (
	"os"
	"path/filepath"
)

// WriteFile writes data to path durably: a temporary file in the same
// directory with the given mode, fsync, then rename over path (overwrite
// true) or hard-link to path (overwrite false: fails with an error
// satisfying errors.Is(err, fs.ErrExist) when path exists), then fsync of
// the directory so the new name itself is durable.
func WriteFile(path string, data []byte, mode os.FileMode, overwrite bool) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if overwrite {
		err = os.Rename(tmp.Name(), path)
	} else {
		err = os.Link(tmp.Name(), path)
	}
	if err != nil {
		return err
	}
	return SyncDir(dir)
}

// SyncDir fsyncs a directory, making renames, links and removals in it
// durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
