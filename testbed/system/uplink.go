package system

import (
	"errors"
	"io"
	"net"
	"sync"
)

// Uplink is a TCP proxy between the agent and the broker that the demo
// can cut and restore: a gateway losing its uplink, without touching the
// control plane (the dashboard and API stay up).
type Uplink struct {
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
}

// errUplinkUp is Restore's answer when the uplink is not cut.
var errUplinkUp = errors.New("the uplink is not cut")

// NewUplink listens on a free loopback port and forwards to target.
func NewUplink(target string) (*Uplink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &Uplink{target: target, addr: ln.Addr().String(), conns: map[net.Conn]bool{}}
	u.serve(ln)
	return u, nil
}

func (u *Uplink) serve(ln net.Listener) {
	u.mu.Lock()
	u.ln = ln
	u.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go u.pipe(c)
		}
	}()
}

func (u *Uplink) pipe(c net.Conn) {
	up, err := net.Dial("tcp", u.target)
	if err != nil {
		c.Close()
		return
	}
	u.mu.Lock()
	if u.ln == nil { // cut meanwhile
		u.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	u.conns[c], u.conns[up] = true, true
	u.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	u.mu.Lock()
	delete(u.conns, c)
	delete(u.conns, up)
	u.mu.Unlock()
}

// Cut closes the listener and every connection through it.
func (u *Uplink) Cut() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.ln != nil {
		u.ln.Close()
		u.ln = nil
	}
	for c := range u.conns {
		c.Close()
	}
}

// Restore listens again on the same address.
func (u *Uplink) Restore() error {
	u.mu.Lock()
	up := u.ln != nil
	u.mu.Unlock()
	if up {
		return errUplinkUp
	}
	ln, err := net.Listen("tcp", u.addr)
	if err != nil {
		return err
	}
	u.serve(ln)
	return nil
}

// Addr is the address the agent dials instead of the broker's.
func (u *Uplink) Addr() string { return u.addr }
