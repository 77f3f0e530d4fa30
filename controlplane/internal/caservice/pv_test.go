package caservice

import "testing"

func TestBuiltinProfilesValid(t *testing.T) {
	for _, p := range []struct {
		name string
		err  error
	}{{"device", defaultDeviceProfile().Validate()}, {"dms", dmsProfile().Validate()}} {
		if p.err != nil {
			t.Errorf("built-in profile %s: %v", p.name, p.err)
		}
	}
}
