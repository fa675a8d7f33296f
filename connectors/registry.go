package connectors

import (
	"fmt"
	"io"
	"net/http"
	"sort"

	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/config"
)

// Type declares a connector type once: its config keys (from which strict
// decoding, `validate`, `schema` and the docs come), what it can do, and how
// to build an instance.
type Type struct {
	Name string
	Doc  string
	// Fields are the type's config keys besides `type`.
	Fields []config.Field
	// Source, Lister and Sink say what an instance implements, so validate can
	// check routes without building anything.
	Source bool
	Lister bool
	// Actions are the sink's actions; the first is the default when a route
	// names only the connector.
	Actions []Action
	// Build decodes the config node and builds an instance. It must not touch
	// the network. The result implements Source, Sink and/or Lister as declared.
	Build func(node *yaml.Node, env Env) (any, error)
	// Fake, when set, returns a faithful stand-in for the type's system as an
	// HTTP handler that logs what it receives to w (`clinicbridge fake TYPE`).
	Fake func(w io.Writer) http.Handler
	// Sample, for sources, signs a realistic webhook of eventType exactly as
	// the system would send it (`clinicbridge send-test`); a nil payload means
	// the type's built-in example.
	Sample func(node *yaml.Node, env Env, eventType string, payload []byte) (http.Header, []byte, error)
}

// Sink reports whether the type performs actions.
func (t Type) Sink() bool { return len(t.Actions) > 0 }

// Action looks up one of the type's actions.
func (t Type) Action(name string) (Action, bool) {
	for _, a := range t.Actions {
		if a.Name == name {
			return a, true
		}
	}
	return Action{}, false
}

// Define builds a Type whose Build decodes into the typed config C and calls
// build. C's yaml tags must match fields; keys were already checked against
// fields, so decoding cannot meet an unknown key.
func Define[C any](t Type, build func(c *C, env Env) (any, error)) Type {
	t.Build = func(node *yaml.Node, env Env) (any, error) {
		var c C
		if node != nil {
			if err := node.Decode(&c); err != nil {
				return nil, err
			}
		}
		if v, ok := any(&c).(interface{ Validate() error }); ok {
			if err := v.Validate(); err != nil {
				return nil, err
			}
		}
		return build(&c, env)
	}
	return t
}

// Registry maps type names to declarations. It is a value: tests build their
// own, and connectors/all lists every type the binary ships.
type Registry struct {
	types map[string]Type
}

// NewRegistry returns a registry holding types.
func NewRegistry(types ...Type) *Registry {
	r := &Registry{types: map[string]Type{}}
	for _, t := range types {
		r.Register(t)
	}
	return r
}

// Register adds t; a second type with the same name is a programming error.
func (r *Registry) Register(t Type) {
	if _, dup := r.types[t.Name]; dup {
		panic(fmt.Sprintf("connectors: type %q registered twice", t.Name))
	}
	for _, f := range t.Fields {
		if f.Name == "type" {
			panic(fmt.Sprintf("connectors: type %q declares a field named `type`, which names the connector type", t.Name))
		}
	}
	r.types[t.Name] = t
}

// Lookup returns the type called name.
func (r *Registry) Lookup(name string) (Type, bool) {
	t, ok := r.types[name]
	return t, ok
}

// Types returns every registered type, sorted by name.
func (r *Registry) Types() []Type {
	out := make([]Type, 0, len(r.types))
	for _, t := range r.types {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Names returns the registered type names, sorted.
func (r *Registry) Names() []string {
	var names []string
	for _, t := range r.Types() {
		names = append(names, t.Name)
	}
	return names
}

// ConnectorFields returns the config keys of type typ (config.ConnectorTypes):
// its own, and for sinks the protections every sink accepts.
func (r *Registry) ConnectorFields(typ string) ([]config.Field, bool) {
	t, ok := r.types[typ]
	if ok && t.Sink() {
		return append(append([]config.Field{}, t.Fields...), config.SinkLimitFields...), true
	}
	return t.Fields, ok
}
