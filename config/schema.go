package config

import "sort"

// Schema returns the JSON Schema (draft 2020-12) of a config file, from the
// same declarations Check enforces. types lists each connector type's keys;
// mappingSchema is the schema of an inline mapping (from the mapping package).
func Schema(types map[string][]Field, mappingSchema map[string]any) map[string]any {
	root := objectSchema(Spec)
	props := root["properties"].(map[string]any)

	names := make([]string, 0, len(types))
	for n := range types {
		names = append(names, n)
	}
	sort.Strings(names)
	var branches []any
	for _, n := range names {
		all := append([]Field{{Name: "type", Kind: KindString, Required: true}}, types[n]...)
		branch := objectSchema(all)
		branch["properties"].(map[string]any)["type"] = map[string]any{"const": n}
		branches = append(branches, map[string]any{
			"if":   map[string]any{"properties": map[string]any{"type": map[string]any{"const": n}}, "required": []any{"type"}},
			"then": branch,
		})
	}
	props["connectors"] = map[string]any{
		"description": fieldByName(Spec, "connectors").Doc,
		"type":        "object",
		"additionalProperties": map[string]any{
			"type":       "object",
			"required":   []any{"type"},
			"properties": map[string]any{"type": map[string]any{"enum": toAny(names)}},
			"allOf":      branches,
		},
	}
	route := props["routes"].(map[string]any)["items"].(map[string]any)
	route["properties"].(map[string]any)["map"] = map[string]any{
		"description": "Mapping file (relative to this config) or an inline mapping.",
		"anyOf":       []any{map[string]any{"type": "string"}, mappingSchema},
	}
	root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	root["title"] = "clinicbridge config"
	return root
}

func fieldByName(fields []Field, name string) Field {
	f, _ := lookupField(fields, name)
	return f
}

func objectSchema(fields []Field) map[string]any {
	props := map[string]any{}
	var required []any
	for _, f := range fields {
		props[f.Name] = fieldSchema(f)
		if f.Required {
			required = append(required, f.Name)
		}
	}
	s := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	if len(required) > 0 {
		s["required"] = required
	}
	return s
}

// envRef lets a typed key hold a ${VAR} that expands to the right type.
var envRef = map[string]any{"type": "string", "pattern": `\$\{`}

func fieldSchema(f Field) map[string]any {
	var s map[string]any
	switch f.Kind {
	case KindString:
		s = map[string]any{"type": []any{"string", "number", "boolean"}}
		if len(f.Enum) > 0 {
			s = map[string]any{"anyOf": []any{map[string]any{"enum": toAny(f.Enum)}, envRef}}
		}
	case KindInt:
		s = map[string]any{"anyOf": []any{map[string]any{"type": "integer"}, envRef}}
	case KindBool:
		s = map[string]any{"anyOf": []any{map[string]any{"type": "boolean"}, envRef}}
	case KindDuration:
		s = map[string]any{"type": "string", "pattern": `^(\$\{.*\}|[0-9]+d|([0-9.]+(ns|us|µs|ms|s|m|h))+)$`}
	case KindSize:
		s = map[string]any{"anyOf": []any{map[string]any{"type": "integer", "minimum": 1}, map[string]any{"type": "string", "pattern": `^(\$\{.*\}|[0-9]+ ?(B|KB|MB|GB|KiB|MiB|GiB)?)$`}}}
	case KindStringMap:
		s = map[string]any{"type": "object", "additionalProperties": map[string]any{"type": []any{"string", "number", "boolean"}}}
	case KindStringList:
		s = map[string]any{"type": "array", "items": map[string]any{"type": []any{"string", "number", "boolean"}}}
		if len(f.Enum) > 0 {
			s["items"] = map[string]any{"enum": toAny(f.Enum)}
		}
	case KindObject:
		s = objectSchema(f.Fields)
		if f.OneOf {
			var one []any
			for _, sf := range f.Fields {
				one = append(one, map[string]any{"required": []any{sf.Name}})
			}
			s["oneOf"] = one
		}
	case KindObjectList:
		s = map[string]any{"type": "array", "items": objectSchema(f.Fields)}
	case KindAny:
		s = map[string]any{}
	}
	if f.Or != nil {
		s = map[string]any{"anyOf": []any{s, fieldSchema(*f.Or)}}
	}
	if f.Doc != "" {
		s["description"] = f.Doc
	}
	if f.Default != "" {
		s["default"] = f.Default
	}
	if f.Secret {
		s["writeOnly"] = true
	}
	return s
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
