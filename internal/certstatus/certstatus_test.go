package certstatus

import (
	"math"
	"testing"
	"time"
)

var (
	nb = time.Date(2026, time.January, 1, 0, 0, 0, 0, time.UTC)
	na = nb.Add(90 * 24 * time.Hour) // 90-day certificate
)

const day = 24 * time.Hour

func TestRenewalTime(t *testing.T) {
	tests := []struct {
		name      string
		notBefore time.Time
		notAfter  time.Time
		th        Threshold
		want      time.Time
	}{
		{"zero threshold is notAfter", nb, na, Threshold{}, na},
		{"before only", nb, na, Threshold{Before: 30 * day}, na.Add(-30 * day)},
		{"fraction only", nb, na, Threshold{Fraction: 2.0 / 3}, nb.Add(60 * day)},
		{"fraction half", nb, na, Threshold{Fraction: 0.5}, nb.Add(45 * day)},
		{"both, before is earlier", nb, na, Threshold{Before: 40 * day, Fraction: 2.0 / 3}, na.Add(-40 * day)},
		{"both, fraction is earlier", nb, na, Threshold{Before: 10 * day, Fraction: 2.0 / 3}, nb.Add(60 * day)},
		{"before longer than lifetime clamps to notBefore", nb, na, Threshold{Before: 365 * day}, nb},
		{"negative fields are ignored", nb, na, Threshold{Before: -day, Fraction: -0.5}, na},
		{"fraction at or above one is notAfter", nb, na, Threshold{Fraction: 1.5}, na},
		{"infinite fraction is notAfter", nb, na, Threshold{Fraction: math.Inf(1)}, na},
		{"nan fraction is ignored", nb, na, Threshold{Fraction: math.NaN()}, na},
		{"zero-length window", nb, nb, Threshold{Fraction: 0.5, Before: time.Hour}, nb},
		{"degenerate window is notAfter", na, nb, Threshold{Before: day}, nb},
		{
			"lifetime beyond duration range",
			nb, time.Date(9999, time.December, 31, 23, 59, 59, 0, time.UTC),
			Threshold{Fraction: 0.5},
			time.Unix(nb.Unix()+(time.Date(9999, time.December, 31, 23, 59, 59, 0, time.UTC).Unix()-nb.Unix())/2, 0).UTC(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := RenewalTime(tt.notBefore, tt.notAfter, tt.th)
			if d := got.Sub(tt.want); d < -time.Second || d > time.Second {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRenewalTimeExact(t *testing.T) {
	// Boundaries tests below rely on exact values, not just within a second.
	if got, want := RenewalTime(nb, na, Threshold{Fraction: 2.0 / 3}), nb.Add(60*day); !got.Equal(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if got, want := RenewalTime(nb, na, Threshold{Before: 7 * day}), na.Add(-7*day); !got.Equal(want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestOf(t *testing.T) {
	twoThirds := Threshold{Fraction: 2.0 / 3}
	week := Threshold{Before: 7 * day}
	both := Threshold{Before: 7 * day, Fraction: 2.0 / 3} // fraction (day 60) beats before (day 83)
	tests := []struct {
		name string
		now  time.Time
		nb   time.Time
		na   time.Time
		th   Threshold
		want Status
	}{
		{"before notBefore", nb.Add(-time.Nanosecond), nb, na, week, NotYetValid},
		{"exactly at notBefore", nb, nb, na, week, Active},
		{"middle", nb.Add(30 * day), nb, na, week, Active},
		{"just before renewal point (before)", na.Add(-7*day - time.Nanosecond), nb, na, week, Active},
		{"exactly at renewal point (before)", na.Add(-7 * day), nb, na, week, AboutToExpire},
		{"just before renewal point (fraction)", nb.Add(60*day - time.Nanosecond), nb, na, twoThirds, Active},
		{"exactly at renewal point (fraction)", nb.Add(60 * day), nb, na, twoThirds, AboutToExpire},
		{"both set, fraction earlier wins", nb.Add(61 * day), nb, na, both, AboutToExpire},
		{"both set, before alone would still be active", nb.Add(61 * day), nb, na, week, Active},
		{"exactly at notAfter is still valid", na, nb, na, week, AboutToExpire},
		{"exactly at notAfter, zero threshold", na, nb, na, Threshold{}, Active},
		{"just after notAfter", na.Add(time.Nanosecond), nb, na, week, Expired},
		{"long after notAfter", na.Add(365 * day), nb, na, Threshold{}, Expired},
		{"zero threshold never about to expire", na.Add(-time.Second), nb, na, Threshold{}, Active},
		{"before exceeds lifetime: about to expire from notBefore", nb, nb, na, Threshold{Before: 365 * day}, AboutToExpire},
		{"before exceeds lifetime: still not yet valid before notBefore", nb.Add(-time.Second), nb, na, Threshold{Before: 365 * day}, NotYetValid},
		{"degenerate window, now inside the reversed span", nb.Add(day), na, nb, week, Expired},
		{"degenerate window, now before both", nb.Add(-day), na, nb, week, Expired},
		{"zero-length window at its instant", nb, nb, nb, Threshold{}, Active},
		{"zero-length window with threshold", nb, nb, nb, week, AboutToExpire},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Of(tt.now, tt.nb, tt.na, tt.th); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestOfAgreesWithRenewalTime(t *testing.T) {
	ths := []Threshold{{Before: 7 * day}, {Fraction: 2.0 / 3}, {Before: 40 * day, Fraction: 0.9}, {Fraction: 0.123456789}}
	for _, th := range ths {
		r := RenewalTime(nb, na, th)
		if got := Of(r, nb, na, th); got != AboutToExpire {
			t.Errorf("%+v at renewal time: got %v, want %v", th, got, AboutToExpire)
		}
		if got := Of(r.Add(-time.Nanosecond), nb, na, th); got != Active {
			t.Errorf("%+v just before renewal time: got %v, want %v", th, got, Active)
		}
	}
}

func TestThresholdValidate(t *testing.T) {
	tests := []struct {
		name    string
		th      Threshold
		wantErr bool
	}{
		{"zero", Threshold{}, false},
		{"before", Threshold{Before: day}, false},
		{"fraction", Threshold{Fraction: 2.0 / 3}, false},
		{"both", Threshold{Before: day, Fraction: 0.5}, false},
		{"negative before", Threshold{Before: -day}, true},
		{"negative fraction", Threshold{Fraction: -0.1}, true},
		{"fraction one", Threshold{Fraction: 1}, true},
		{"fraction above one", Threshold{Fraction: 1.5}, true},
		{"fraction nan", Threshold{Fraction: math.NaN()}, true},
		{"fraction inf", Threshold{Fraction: math.Inf(1)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.th.Validate()
			if got := err != nil; got != tt.wantErr {
				t.Errorf("got error %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestStatusValid(t *testing.T) {
	tests := []struct {
		s    Status
		want bool
	}{
		{NotYetValid, true}, {Active, true}, {AboutToExpire, true}, {Expired, true},
		{"revoked", false}, {"", false},
	}
	for _, tt := range tests {
		t.Run(string(tt.s), func(t *testing.T) {
			if got := tt.s.Valid(); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func BenchmarkOf(b *testing.B) {
	th := Threshold{Before: 7 * day, Fraction: 2.0 / 3}
	now := nb.Add(50 * day)
	for b.Loop() {
		_ = Of(now, nb, na, th)
	}
}
