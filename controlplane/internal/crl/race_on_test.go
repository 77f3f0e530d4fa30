//go:build race

package crl

const raceEnabled = true
