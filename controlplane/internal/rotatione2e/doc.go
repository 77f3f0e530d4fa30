// Package rotatione2e holds the end-to-end test of agentless rotation: a
// real control plane on Postgres with its embedded broker, an
// outpost-agent process in local mode with a rotation inventory and
// routes, and devices played by local HTTPS servers whose certificates
// POSIX sh hooks replace with openssl. It has no code of its own.
package rotatione2e
