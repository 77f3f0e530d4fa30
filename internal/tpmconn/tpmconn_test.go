package tpmconn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
)

// response builds a TPM response with the given body and the size field
// set to announced (len when negative).
func response(body []byte, announced int) []byte {
	r := make([]byte, headerSize+len(body))
	binary.BigEndian.PutUint16(r[0:2], 0x8001) // TPM_ST_NO_SESSIONS
	if announced < 0 {
		announced = len(r)
	}
	binary.BigEndian.PutUint32(r[2:6], uint32(announced))
	copy(r[headerSize:], body)
	return r
}

// serve answers one command on the server end of a pipe by writing rsp in
// chunks of chunk bytes, the way a socket may deliver it.
func serve(t *testing.T, server net.Conn, rsp []byte, chunk int) {
	t.Helper()
	go func() {
		buf := make([]byte, 64)
		if _, err := server.Read(buf); err != nil {
			return
		}
		for len(rsp) > 0 {
			n := min(chunk, len(rsp))
			if _, err := server.Write(rsp[:n]); err != nil {
				return
			}
			rsp = rsp[n:]
		}
		server.Close()
	}()
}

func TestSend(t *testing.T) {
	body := bytes.Repeat([]byte{0xab}, 300)
	tests := []struct {
		name    string
		rsp     []byte
		chunk   int
		want    []byte
		wantErr error
	}{
		{name: "whole", rsp: response(body, -1), chunk: 1 << 16, want: response(body, -1)},
		{name: "split in 7-byte chunks", rsp: response(body, -1), chunk: 7, want: response(body, -1)},
		{name: "header only", rsp: response(nil, -1), chunk: 3, want: response(nil, -1)},
		{name: "size below header", rsp: response(nil, 4), chunk: 64},
		{name: "size above cap", rsp: response(nil, maxResponse+1), chunk: 64, wantErr: ErrResponseTooLarge},
		{name: "truncated body", rsp: response(body, -1)[:100], chunk: 64, wantErr: io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := net.Pipe()
			c := New(client)
			defer c.Close()
			serve(t, server, tt.rsp, tt.chunk)
			got, err := c.Send([]byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 1, 0x7b, 0, 8})
			if tt.want != nil {
				if err != nil {
					t.Fatalf("got error %v, want none", err)
				}
				if !bytes.Equal(got, tt.want) {
					t.Errorf("got %d bytes, want %d", len(got), len(tt.want))
				}
				return
			}
			if err == nil {
				t.Fatal("got no error, want one")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("got error %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// FuzzSend feeds arbitrary bytes as a TPM's answer: Send must return a
// whole response or an error, never panic or over-allocate.
func FuzzSend(f *testing.F) {
	f.Add(response([]byte{1, 2, 3}, -1))
	f.Add(response(nil, 4))
	f.Add(response(nil, maxResponse+1))
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, rsp []byte) {
		client, server := net.Pipe()
		c := New(client)
		defer c.Close()
		serve(t, server, rsp, 17)
		got, err := c.Send([]byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 1, 0x44})
		if err != nil {
			return
		}
		if len(got) < headerSize || len(got) > maxResponse {
			t.Fatalf("accepted a %d-byte response", len(got))
		}
		if int(binary.BigEndian.Uint32(got[2:6])) != len(got) {
			t.Fatalf("response length %d differs from its size field", len(got))
		}
	})
}
