// Package este2e holds the end-to-end tests of EST enrollment: a real
// control plane on Postgres with its embedded broker, outpost-agent
// processes serving EST, and devices played by the project's EST client
// and by curl + openssl. It has no code of its own.
package este2e
