package rotation

import (
	"strings"
	"testing"
	"time"
)

func TestTableLookup(t *testing.T) {
	table, err := NewTable([]Route{
		{Name: "axis-new", Match: Match{Platform: "axis", OSVersion: ">=10.0,<12"}, Hook: "/hooks/axis-new"},
		{Name: "axis-old", Match: Match{Platform: "axis"}, Hook: "/hooks/axis-old"},
		{Name: "hp-m4", Match: Match{Platform: "hp-*", Model: "M4[0-9][0-9]"}, Hook: "/hooks/hp"},
		{Match: Match{OSVersion: "7.*-lts", Model: "ups"}, Hook: "/hooks/ups"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		d    Device
		want string
	}{
		{"constraint matches", Device{Platform: "axis", OSVersion: "10.12.3"}, "axis-new"},
		{"constraint misses, next route", Device{Platform: "axis", OSVersion: "12.0"}, "axis-old"},
		{"no version, next route", Device{Platform: "axis"}, "axis-old"},
		{"glob platform and model", Device{Platform: "hp-laserjet", Model: "M404"}, "hp-m4"},
		{"glob model misses", Device{Platform: "hp-laserjet", Model: "M4040"}, ""},
		{"default name", Device{Platform: "apc", OSVersion: "7.1-lts", Model: "ups"}, "route-4"},
		{"exact is case-sensitive", Device{Platform: "AXIS", OSVersion: "10.1"}, ""},
		{"nothing", Device{Platform: "other"}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, ok := table.Lookup(tt.d)
			if got := r.Name; got != tt.want || ok != (tt.want != "") {
				t.Errorf("got %q (%v), want %q", got, ok, tt.want)
			}
		})
	}
	if r, _ := table.Lookup(Device{Platform: "axis"}); r.Timeout != DefaultHookTimeout {
		t.Errorf("default timeout: got %v, want %v", r.Timeout, DefaultHookTimeout)
	}
}

func TestNewTableErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		r    Route
		want string
	}{
		{"relative hook", Route{Hook: "hook.sh"}, "must be an absolute path"},
		{"no hook", Route{}, "must be an absolute path"},
		{"bad glob", Route{Hook: "/h", Match: Match{Platform: "[x"}}, "match.platform"},
		{"bad constraint", Route{Hook: "/h", Match: Match{OSVersion: ">=1,,2"}}, "match.os_version"},
		{"timeout", Route{Hook: "/h", Timeout: time.Millisecond}, "timeout"},
		{"renew_before", Route{Hook: "/h", RenewBefore: -time.Hour}, "renew_before"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewTable([]Route{{Name: "ok", Hook: "/ok"}, tt.r})
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "rotation.routes[1]") {
				t.Errorf("got %v, want %q naming routes[1]", err, tt.want)
			}
		})
	}
}
