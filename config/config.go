// Package config loads clinicbridge's YAML config: ${ENV} and ${file:path}
// expansion, strict keys (an unknown key is an error), defaults, and errors
// that name file:line:col and the key path. It knows the shape of the file;
// what connector types exist and what mappings mean are checked by the
// packages that own them, with the positions kept here.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/robfig/cron/v3"
	"gopkg.in/yaml.v3"
)

// Config is a loaded config file.
type Config struct {
	Version    int         `yaml:"version"`
	Server     Server      `yaml:"server"`
	Admin      Admin       `yaml:"admin"`
	Store      Store       `yaml:"store"`
	Log        Log         `yaml:"log"`
	Connectors []Connector `yaml:"-"` // in file order
	Routes     []Route     `yaml:"routes"`
	Reconcile  []Reconcile `yaml:"reconcile"`

	File string `yaml:"-"` // the config file, as given
	Dir  string `yaml:"-"` // its folder: relative paths resolve here
}

type Server struct {
	Listen    string   `yaml:"listen"`
	PublicURL string   `yaml:"public_url"`
	MaxBody   ByteSize `yaml:"max_body"`
	TLS       *TLS     `yaml:"tls"`
}

type TLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
}

type Admin struct {
	Listen string       `yaml:"listen"`
	Token  string       `yaml:"token"`
	Tokens []AdminToken `yaml:"tokens"`
}

// AdminToken is a named admin API token with scopes.
type AdminToken struct {
	Name   string   `yaml:"name"`
	Token  string   `yaml:"token"`
	Scopes []string `yaml:"scopes"`
}

// Admin scopes: read sees, replay also operates (replay, reconcile run),
// admin may do everything (purge, rekey, reload).
const (
	ScopeRead   = "read"
	ScopeReplay = "replay"
	ScopeAdmin  = "admin"
)

// AllTokens is admin.token (named "admin", every scope) plus admin.tokens.
func (a Admin) AllTokens() []AdminToken {
	out := make([]AdminToken, 0, len(a.Tokens)+1)
	if a.Token != "" {
		out = append(out, AdminToken{Name: "admin", Token: a.Token, Scopes: []string{ScopeAdmin}})
	}
	return append(out, a.Tokens...)
}

type Store struct {
	Driver        string   `yaml:"driver"`
	Path          string   `yaml:"path"`
	URL           string   `yaml:"url"`
	Retention     Duration `yaml:"retention"`
	EncryptionKey Strings  `yaml:"encryption_key"`
	AgentID       string   `yaml:"agent_id"`
	Migrate       *bool    `yaml:"migrate"`
}

// MigrateAtStart reports store.migrate (default true).
func (s Store) MigrateAtStart() bool { return s.Migrate == nil || *s.Migrate }

// Strings decodes one string or a list of them.
type Strings []string

func (s *Strings) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		if n.Value != "" {
			*s = Strings{n.Value}
		}
		return nil
	}
	var list []string
	if err := n.Decode(&list); err != nil {
		return err
	}
	*s = list
	return nil
}

type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Connector is one named connector. Its keys depend on its type, so the node
// is kept for the connector registry to check and decode.
type Connector struct {
	Name string
	Type string
	Node *yaml.Node // the connector's mapping, including `type`
	Key  *yaml.Node // the name's node, for errors
	// Limits are the sink protections every sink type accepts (SinkLimitFields).
	Limits SinkLimits
}

// SinkLimits protect a sink: `rate`, `concurrency` and `breaker`.
type SinkLimits struct {
	Rate        string   `yaml:"rate"`
	Concurrency int      `yaml:"concurrency"`
	Breaker     *Breaker `yaml:"breaker"`
}

// Breaker opens after Failures consecutive transient failures and probes
// the sink once per Cooldown until it recovers.
type Breaker struct {
	Failures int      `yaml:"failures"`
	Cooldown Duration `yaml:"cooldown"`
}

// SinkLimitFields are accepted by every sink connector type, besides its own.
var SinkLimitFields = []Field{
	{Name: "rate", Kind: KindString, Example: "10/s", Doc: "Most calls to this sink, across all routes: N/s, N/min or N/h. Deliveries beyond it wait (without using attempts)."},
	{Name: "concurrency", Kind: KindInt, Example: "4", Doc: "Most calls to this sink in flight at once."},
	{Name: "breaker", Kind: KindObject, Doc: "Circuit breaker: after `failures` consecutive transient failures, stop calling the sink; every `cooldown`, let one delivery through as a probe; close when it succeeds. Waiting deliveries keep their attempts.", Fields: []Field{
		{Name: "failures", Kind: KindInt, Default: "20", Doc: "Consecutive transient failures that open the circuit."},
		{Name: "cooldown", Kind: KindDuration, Default: "30s", Doc: "How long the circuit stays open before the next probe."},
	}},
}

// Route sends events from a source through a mapping to a sink.
type Route struct {
	Name     string   `yaml:"name"`
	From     string   `yaml:"from"`
	Events   []string `yaml:"events"`
	When     string   `yaml:"when"`
	Key      string   `yaml:"key"`
	At       string   `yaml:"at"`
	CancelOn []string `yaml:"cancel_on"`
	Late     string   `yaml:"late"`
	Quiet    *Quiet   `yaml:"quiet_hours"`
	Map      MapRef   `yaml:"map"`
	To       Target   `yaml:"to"`
	Needs    *Needs   `yaml:"needs"`
	Retry    Retry    `yaml:"retry"`

	Node *yaml.Node `yaml:"-"` // for errors that point into the route
}

// MapRef is a route's mapping: a file path or an inline mapping document.
type MapRef struct {
	File   string     // resolved against the config folder
	Inline *yaml.Node // when written inline
}

func (m *MapRef) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		m.File = n.Value
		return nil
	}
	m.Inline = n
	return nil
}

// Quiet is a daily window in which nothing is sent.
type Quiet struct {
	Start string `yaml:"start"`
	End   string `yaml:"end"`
	TZ    string `yaml:"tz"`
}

// Needs makes a route wait for another route's success for a key.
type Needs struct {
	Route string   `yaml:"route"`
	Key   string   `yaml:"key"`
	Wait  Duration `yaml:"wait"`
}

// Target is a route's `to`: a connector name, or {connector, action}.
type Target struct {
	Connector string `yaml:"connector"`
	Action    string `yaml:"action"`
}

func (t *Target) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		t.Connector = n.Value
		return nil
	}
	type plain Target
	return n.Decode((*plain)(t))
}

// Retry bounds a route's retries.
type Retry struct {
	MaxAttempts int        `yaml:"max_attempts"`
	MaxAge      Duration   `yaml:"max_age"`
	Backoff     []Duration `yaml:"backoff"`
}

// Reconcile is a cron-driven pull of a source's list API.
type Reconcile struct {
	Name     string   `yaml:"name"`
	From     string   `yaml:"from"`
	Schedule string   `yaml:"schedule"`
	Lookback Duration `yaml:"lookback"`

	Node *yaml.Node `yaml:"-"`
}

// Defaults, documented in Spec.
const (
	DefaultListen      = "0.0.0.0:8080"
	DefaultAdminListen = "127.0.0.1:8081"
	DefaultMaxBody     = 1 << 20
	DefaultStorePath   = "./data/clinicbridge.db"
	DefaultRetention   = 720 * time.Hour
	DefaultLookback    = time.Hour
)

// CronParser reads reconcile schedules: five fields, or six with seconds
// first, and descriptors such as @every 5m.
var CronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ConnectorTypes tells the loader which connector types exist and their keys.
// connectors.Registry implements it.
type ConnectorTypes interface {
	ConnectorFields(typ string) ([]Field, bool)
	Names() []string
}

// Options adjust Load for tests and tools.
type Options struct {
	Env Lookup // default os.LookupEnv
}

// Load reads, expands, checks and decodes the config at path. Every problem
// found is returned at once, as Errors.
func Load(path string, types ConnectorTypes, opts Options) (*Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return Parse(path, src, types, opts)
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Parse is Load on bytes already read.
func Parse(path string, src []byte, types ConnectorTypes, opts Options) (*Config, error) {
	if opts.Env == nil {
		opts.Env = os.LookupEnv
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(abs)

	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, Errors{syntaxError(path, err)}
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, Errors{&Error{File: path, Msg: "the file is empty"}}
	}
	root := doc.Content[0]
	if errs := expand(path, dir, root, opts.Env, ""); len(errs) > 0 {
		return nil, Errors(errs)
	}
	errs := Check(path, root, Spec, "")
	cfg := &Config{File: path, Dir: dir}
	// Connector bodies depend on their type, checked against its declaration.
	if n := ValueNode(root, "connectors"); n != nil && n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			c := Connector{Name: k.Value, Node: v, Key: k}
			p := "connectors." + k.Value
			if !validName.MatchString(k.Value) {
				errs = append(errs, Errorf(path, k, p, "connector names use letters, digits, - and _"))
			}
			if v.Kind != yaml.MappingNode {
				errs = append(errs, Errorf(path, v, p, "expected an object with a `type`"))
				continue
			}
			tn := ValueNode(v, "type")
			if tn == nil {
				errs = append(errs, Errorf(path, v, p, "missing required key \"type\" (one of %s)", joinNames(types.Names())))
				continue
			}
			c.Type = tn.Value
			fields, ok := types.ConnectorFields(tn.Value)
			if !ok {
				errs = append(errs, Errorf(path, tn, p+".type", "unknown connector type %q (known: %s)", tn.Value, joinNames(types.Names())))
				continue
			}
			all := append([]Field{{Name: "type", Kind: KindString, Required: true}}, fields...)
			errs = append(errs, Check(path, v, all, p)...)
			if err := v.Decode(&c.Limits); err != nil {
				errs = append(errs, Errorf(path, v, p, "%v", err))
			}
			if b := c.Limits.Breaker; b != nil {
				if b.Failures == 0 {
					b.Failures = 20
				}
				if b.Cooldown == 0 {
					b.Cooldown = Duration(30 * time.Second)
				}
			}
			cfg.Connectors = append(cfg.Connectors, c)
		}
	}
	if len(errs) > 0 {
		return nil, Errors(errs)
	}
	if err := root.Decode(cfg); err != nil {
		return nil, Errors{decodeError(path, err)}
	}
	// Keep route and reconcile nodes so later checks can point into them.
	if n := ValueNode(root, "routes"); n != nil {
		for i := range cfg.Routes {
			cfg.Routes[i].Node = n.Content[i]
		}
	}
	if n := ValueNode(root, "reconcile"); n != nil {
		for i := range cfg.Reconcile {
			cfg.Reconcile[i].Node = n.Content[i]
		}
	}
	cfg.defaults()
	if errs := cfg.check(root); len(errs) > 0 {
		return nil, Errors(errs)
	}
	return cfg, nil
}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)

func (c *Config) defaults() {
	if c.Version == 0 {
		c.Version = 1
	}
	if c.Server.Listen == "" {
		c.Server.Listen = DefaultListen
	}
	if c.Server.MaxBody == 0 {
		c.Server.MaxBody = DefaultMaxBody
	}
	if c.Admin.Listen == "" {
		c.Admin.Listen = DefaultAdminListen
	}
	if c.Store.Driver == "" {
		c.Store.Driver = "sqlite"
	}
	if c.Store.Driver == "sqlite" && c.Store.Path == "" {
		c.Store.Path = DefaultStorePath
	}
	if c.Store.Path != "" {
		c.Store.Path = c.Resolve(c.Store.Path)
	}
	if c.Store.Retention == 0 {
		c.Store.Retention = Duration(DefaultRetention)
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	if c.Server.TLS != nil {
		c.Server.TLS.CertFile = c.Resolve(c.Server.TLS.CertFile)
		c.Server.TLS.KeyFile = c.Resolve(c.Server.TLS.KeyFile)
		c.Server.TLS.ClientCAFile = c.Resolve(c.Server.TLS.ClientCAFile)
	}
	for i := range c.Routes {
		r := &c.Routes[i]
		if r.Map.File != "" {
			r.Map.File = c.Resolve(r.Map.File)
		}
	}
}

// Resolve makes a relative path relative to the config file's folder.
func (c *Config) Resolve(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.Dir, p)
}

// check is what the config alone can tell: names unique, references resolve.
func (c *Config) check(root *yaml.Node) []error {
	var errs []error
	if c.Version != 1 {
		errs = append(errs, Errorf(c.File, ValueNode(root, "version"), "version", "unsupported version %d (this binary reads version 1)", c.Version))
	}
	if c.Store.Driver == "postgres" && c.Store.URL == "" {
		errs = append(errs, Errorf(c.File, ValueNode(root, "store"), "store.url", "required when store.driver is postgres"))
	}
	tokenNames := map[string]bool{}
	if c.Admin.Token != "" {
		tokenNames["admin"] = true
	}
	if n := ValueNode(ValueNode(root, "admin"), "tokens"); n != nil {
		for i, tk := range c.Admin.Tokens {
			p := "admin.tokens[" + strconv.Itoa(i) + "]"
			if tokenNames[tk.Name] {
				errs = append(errs, Errorf(c.File, ValueNode(n.Content[i], "name"), p+".name", "duplicate token name %q", tk.Name))
			}
			tokenNames[tk.Name] = true
			if len(tk.Token) < 16 {
				errs = append(errs, Errorf(c.File, ValueNode(n.Content[i], "token"), p+".token", "too short: use at least 16 random characters"))
			}
		}
	}
	names := map[string]bool{}
	for _, cn := range c.Connectors {
		names[cn.Name] = true
	}
	seen := map[string]bool{}
	for i, r := range c.Routes {
		p := "routes[" + strconv.Itoa(i) + "]"
		if seen[r.Name] {
			errs = append(errs, Errorf(c.File, ValueNode(r.Node, "name"), p+".name", "duplicate route name %q", r.Name))
		}
		seen[r.Name] = true
		if !validName.MatchString(r.Name) {
			errs = append(errs, Errorf(c.File, ValueNode(r.Node, "name"), p+".name", "route names use letters, digits, - and _"))
		}
		if !names[r.From] {
			errs = append(errs, Errorf(c.File, ValueNode(r.Node, "from"), p+".from", "no connector named %q%s", r.From, suggestName(r.From, names)))
		}
		if !names[r.To.Connector] {
			n := ValueNode(r.Node, "to")
			if n != nil && n.Kind == yaml.MappingNode {
				n = ValueNode(n, "connector")
			}
			errs = append(errs, Errorf(c.File, n, p+".to", "no connector named %q%s", r.To.Connector, suggestName(r.To.Connector, names)))
		}
		if r.Map.File == "" && r.Map.Inline == nil {
			errs = append(errs, Errorf(c.File, r.Node, p+".map", "missing required key \"map\""))
		}
		if q := r.Quiet; q != nil {
			qn := ValueNode(r.Node, "quiet_hours")
			for _, v := range []struct{ key, val string }{{"start", q.Start}, {"end", q.End}} {
				if _, err := time.Parse("15:04", v.val); err != nil {
					errs = append(errs, Errorf(c.File, ValueNode(qn, v.key), p+".quiet_hours."+v.key, "want HH:MM (24 h), got %q", v.val))
				}
			}
			if _, err := time.LoadLocation(q.TZ); err != nil || q.TZ == "Local" {
				errs = append(errs, Errorf(c.File, ValueNode(qn, "tz"), p+".quiet_hours.tz", "unknown time zone %q (use an IANA name such as Europe/London)", q.TZ))
			}
		}
		if r.Retry.MaxAttempts < 0 {
			errs = append(errs, Errorf(c.File, ValueNode(r.Node, "retry"), p+".retry.max_attempts", "must be at least 1"))
		}
	}
	for i, r := range c.Routes {
		if r.Needs != nil && !seen[r.Needs.Route] {
			n := ValueNode(ValueNode(r.Node, "needs"), "route")
			errs = append(errs, Errorf(c.File, n, "routes["+strconv.Itoa(i)+"].needs.route", "no route named %q", r.Needs.Route))
		}
		if r.Needs != nil && r.Needs.Wait == 0 {
			c.Routes[i].Needs.Wait = Duration(24 * time.Hour)
		}
	}
	seen = map[string]bool{}
	for i, rc := range c.Reconcile {
		p := "reconcile[" + strconv.Itoa(i) + "]"
		if seen[rc.Name] {
			errs = append(errs, Errorf(c.File, ValueNode(rc.Node, "name"), p+".name", "duplicate reconciler name %q", rc.Name))
		}
		seen[rc.Name] = true
		if !names[rc.From] {
			errs = append(errs, Errorf(c.File, ValueNode(rc.Node, "from"), p+".from", "no connector named %q%s", rc.From, suggestName(rc.From, names)))
		}
		if _, err := CronParser.Parse(rc.Schedule); err != nil {
			errs = append(errs, Errorf(c.File, ValueNode(rc.Node, "schedule"), p+".schedule", "invalid cron schedule: %v", err))
		}
		if rc.Lookback == 0 {
			c.Reconcile[i].Lookback = Duration(DefaultLookback)
		}
	}
	return errs
}

// ValueNode returns the value node of key in mapping n, or nil.
func ValueNode(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func suggestName(name string, names map[string]bool) string {
	var fields []Field
	for n := range names {
		fields = append(fields, Field{Name: n})
	}
	return suggest(name, fields)
}

func joinNames(names []string) string {
	var b bytes.Buffer
	for i, n := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(n)
	}
	return b.String()
}

func syntaxError(path string, err error) error {
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: path, Line: line, Col: 1, Msg: "YAML syntax: " + m[2]}
	}
	return &Error{File: path, Msg: "YAML syntax: " + err.Error()}
}

func decodeError(path string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		if m := regexp.MustCompile(`^line (\d+): (.*)$`).FindStringSubmatch(te.Errors[0]); m != nil {
			line, _ := strconv.Atoi(m[1])
			return &Error{File: path, Line: line, Col: 1, Msg: m[2]}
		}
	}
	return &Error{File: path, Msg: err.Error()}
}
