// Package browser holds the browser tests of the admin dashboard
// (controlplane/internal/ui): a real control plane on PostgreSQL, seeded
// through its API, driven by a real headless Chromium over the DevTools
// protocol (github.com/chromedp/chromedp). The tests log in, create a CA
// and a DMS, find a device, revoke a certificate, check that the charts
// render and that a viewer can neither see nor force a change. Each run
// also writes a screenshot of every page to test-output/screenshots
// (`make screenshots` refreshes docs/screenshots, shown in the README). It has no
// code of its own.
package browser
