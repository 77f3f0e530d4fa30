package pkgbuild

import "testing"

func TestPackageVersion(t *testing.T) {
	tests := []struct {
		in, version, prerelease string
		wantErr                 bool
	}{
		{in: "v1.2.3", version: "1.2.3"},
		{in: "1.2.3", version: "1.2.3"},
		{in: "v1.3.0-rc1", version: "1.3.0", prerelease: "rc1"},
		{in: "v1.3.0-rc.1", version: "1.3.0", prerelease: "rc.1"},
		{in: "v1.2.3-4-gabc123", version: "1.2.3+4.gabc123"},
		{in: "v1.2.3-4-gabc123-dirty", version: "1.2.3+4.gabc123.dirty"},
		{in: "v1.2.3-dirty", version: "1.2.3+dirty"},
		{in: "v1.3.0-rc1-2-gdeadbeef", version: "1.3.0", prerelease: "rc1.2.gdeadbeef"},
		{in: "v0.0.0-dev", version: "0.0.0", prerelease: "dev"},
		{in: "", wantErr: true},
		{in: "latest", wantErr: true},
		{in: "v1.2.3-rc_1", wantErr: true},
		{in: "v1.2.3-", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			version, prerelease, err := PackageVersion(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("got %q, %q, want an error", version, prerelease)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if version != tt.version || prerelease != tt.prerelease {
				t.Errorf("got %q, %q, want %q, %q", version, prerelease, tt.version, tt.prerelease)
			}
		})
	}
}
