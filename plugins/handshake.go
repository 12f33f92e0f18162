package plugins

import (
	"context"

	"github.com/hashicorp/go-plugin"
)

// The magic cookie is not a secret: it only stops a plugin binary from
// serving when someone runs it by hand.
const (
	MagicCookieKey   = "OFFPEAK_PLUGIN"
	MagicCookieValue = "5b0e6a3f9d2c47e1a8f4c6d2b7e90a13"
)

// Handshake is the go-plugin handshake shared by offpeak and its plugins.
// A plugin built against another ProtocolVersion is refused by the host.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   MagicCookieKey,
	MagicCookieValue: MagicCookieValue,
}

// Kind names a service a plugin process can serve.
type Kind string

const (
	KindLocker Kind = "locker"
	KindCheck  Kind = "check"
)

// kindInfo is the go-plugin name of the Info service every plugin serves.
const kindInfo = "info"

// Valid reports whether k is a known kind.
func (k Kind) Valid() bool { return k == KindLocker || k == KindCheck }

// Info is what a plugin says about itself right after the handshake.
type Info struct {
	Name            string `json:"name"`
	Version         string `json:"version,omitempty"`
	Kinds           []Kind `json:"kinds"`
	ProtocolVersion int    `json:"protocol_version"`
}

// Serves reports whether the plugin serves kind k.
func (i Info) Serves(k Kind) bool {
	for _, have := range i.Kinds {
		if have == k {
			return true
		}
	}
	return false
}

// Describer is the host's view of the Info service.
type Describer interface {
	Describe(ctx context.Context) (Info, error)
}

// HostPluginSets is the plugin set a host passes to go-plugin as
// ClientConfig.VersionedPlugins. Dispensing KindLocker yields a Locker,
// KindCheck a HealthCheck and "info" a Describer; every answer is validated
// and garbage comes back as an error wrapping ErrBadAnswer.
func HostPluginSets() map[int]plugin.PluginSet {
	return map[int]plugin.PluginSet{
		ProtocolVersion: {
			kindInfo:           &infoPlugin{},
			string(KindLocker): &lockerPlugin{},
			string(KindCheck):  &checkPlugin{},
		},
	}
}

// DispenseInfo is the name to pass to go-plugin's Dispense for the Describer.
const DispenseInfo = kindInfo
