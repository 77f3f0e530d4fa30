package syncclient

import (
	"testing"
	"time"
)

func TestReconnectBackoffWhileDisabled(t *testing.T) {
	c := &Client{DisabledRetry: 5 * time.Minute}
	for _, tc := range []struct {
		name     string
		disabled bool
		attempt  int
		min, max time.Duration
	}{
		{"enabled, first attempt", false, 0, 0, 250 * time.Millisecond},
		{"enabled, later attempt", false, 10, 8 * time.Second, 16 * time.Second},
		{"disabled, first attempt stays quick", true, 0, 0, 250 * time.Millisecond},
		{"disabled, later attempts wait", true, 1, 5 * time.Minute, 5 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.disabled.Store(tc.disabled)
			if got := c.reconnectBackoff(tc.attempt); got < tc.min || got > tc.max {
				t.Errorf("got %v, want %v..%v", got, tc.min, tc.max)
			}
		})
	}
}

func TestSetDisabledReportsChanges(t *testing.T) {
	var got []bool
	c := &Client{OnDisabled: func(v bool) { got = append(got, v) }}
	for _, v := range []bool{true, true, false, false, true} {
		c.setDisabled(v)
	}
	if want := []bool{true, false, true}; len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("got %v, want %v", got, want)
	}
}
