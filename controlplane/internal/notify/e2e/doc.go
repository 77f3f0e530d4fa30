// Package e2e tests notifications against a whole control plane (the
// cptest harness), from outside package notify: the harness imports the
// API, which imports notify.
package e2e
