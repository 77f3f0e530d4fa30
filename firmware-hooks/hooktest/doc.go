// Package hooktest tests the firmware hooks against a real Outpost
// system (testbed/up): the sh hook outpost-enroll under busybox sh, the
// Mender state scripts on a fake device root, and the Go device client
// with a software key and with a key in swtpm. It holds tests only.
package hooktest
