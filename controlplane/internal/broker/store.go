package broker

import (
	"strconv"
	"strings"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"
)

// store is mochi's bolt storage hook (v2.7.9) with three fixes:
//
//   - it does not save the packet id of inflight messages, so after a
//     restart every queued message came back with id 0 and all but one were
//     lost; the id is in the record's key, and StoredInflightMessages puts
//     it back;
//   - it saves refused subscriptions (reason code >= 0x80), which a
//     restart would turn into real ones; OnSubscribed saves only granted
//     ones;
//   - its methods read a database handle that Stop sets to nil, racing with
//     mochi's housekeeping goroutine at shutdown; every call here holds a
//     lock that Stop takes exclusively.
//
// Every write is its own fsynced bbolt transaction.
type store struct {
	*bolt.Hook

	mu      sync.RWMutex
	stopped bool
	err     error // from Stop
}

// do runs f unless the store has stopped.
func (s *store) do(f func()) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.stopped {
		f()
	}
}

// Stop closes the database.
func (s *store) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return s.err
	}
	s.stopped = true
	s.err = s.Hook.Stop()
	return s.err
}

func (s *store) stopErr() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.err
}

func (s *store) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	s.do(func() { s.Hook.OnSessionEstablished(cl, pk) })
}

func (s *store) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	s.do(func() { s.Hook.OnDisconnect(cl, err, expire) })
}

// OnSubscribed saves the granted subscriptions only.
func (s *store) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	var filters packets.Subscriptions
	var codes []byte
	for i, f := range pk.Filters {
		if i < len(reasonCodes) && reasonCodes[i] < packets.ErrUnspecifiedError.Code {
			filters = append(filters, f)
			codes = append(codes, reasonCodes[i])
		}
	}
	if len(filters) == 0 {
		return
	}
	pk.Filters = filters
	s.do(func() { s.Hook.OnSubscribed(cl, pk, codes) })
}

func (s *store) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	s.do(func() { s.Hook.OnUnsubscribed(cl, pk) })
}

func (s *store) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	s.do(func() { s.Hook.OnRetainMessage(cl, pk, r) })
}

func (s *store) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	s.do(func() { s.Hook.OnWillSent(cl, pk) })
}

func (s *store) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	s.do(func() { s.Hook.OnQosPublish(cl, pk, sent, resends) })
}

func (s *store) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	s.do(func() { s.Hook.OnQosComplete(cl, pk) })
}

func (s *store) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	s.do(func() { s.Hook.OnQosDropped(cl, pk) })
}

func (s *store) OnSysInfoTick(info *system.Info) {
	s.do(func() { s.Hook.OnSysInfoTick(info) })
}

func (s *store) OnClientExpired(cl *mqtt.Client) {
	s.do(func() { s.Hook.OnClientExpired(cl) })
}

func (s *store) OnRetainedExpired(filter string) {
	s.do(func() { s.Hook.OnRetainedExpired(filter) })
}

func (s *store) StoredClients() (v []storage.Client, err error) {
	s.do(func() { v, err = s.Hook.StoredClients() })
	return v, err
}

func (s *store) StoredSubscriptions() (v []storage.Subscription, err error) {
	s.do(func() { v, err = s.Hook.StoredSubscriptions() })
	return v, err
}

// StoredInflightMessages restores each message's packet id from its key
// ("IFM_<client id>:<packet id>") and leaves out records without one.
func (s *store) StoredInflightMessages() (v []storage.Message, err error) {
	s.do(func() { v, err = s.Hook.StoredInflightMessages() })
	out := v[:0]
	for _, m := range v {
		if m.PacketID == 0 {
			m.PacketID = packetIDFromKey(m.ID)
		}
		if m.PacketID == 0 {
			s.Log.Warn("dropping stored inflight message without packet id", "key", m.ID)
			continue
		}
		out = append(out, m)
	}
	return out, err
}

// packetIDFromKey returns the packet id at the end of an inflight record's
// key, or 0.
func packetIDFromKey(key string) uint16 {
	i := strings.LastIndexByte(key, ':')
	if i < 0 {
		return 0
	}
	id, err := strconv.ParseUint(key[i+1:], 10, 16)
	if err != nil {
		return 0
	}
	return uint16(id)
}

func (s *store) StoredRetainedMessages() (v []storage.Message, err error) {
	s.do(func() { v, err = s.Hook.StoredRetainedMessages() })
	return v, err
}

func (s *store) StoredSysInfo() (v storage.SystemInfo, err error) {
	s.do(func() { v, err = s.Hook.StoredSysInfo() })
	return v, err
}

var _ mqtt.Hook = (*store)(nil)
