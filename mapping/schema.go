package mapping

// SchemaID identifies the mapping schema. It is a URN rather than a URL so that
// the schema can be embedded (for inline `map:`) with its $defs resolving
// inside it, without pretending to be hosted anywhere.
const SchemaID = "urn:clinicbridge:schema:mapping"

// JSONSchema returns the JSON Schema (draft 2020-12, as map[string]any) of a mapping document, used standalone and embedded for inline `map:`.
// It describes the shape; expressions, positions and the exactly-one-form
// rule's wording are checked by Compile. A new map is built per call, so
// callers may modify it.
func JSONSchema() map[string]any {
	obj := func(m map[string]any) map[string]any { m["type"] = "object"; return m }
	str := func(desc string) map[string]any { return map[string]any{"type": "string", "description": desc} }
	boolean := func(desc string) map[string]any { return map[string]any{"type": "boolean", "description": desc} }
	forms := []any{}
	for _, k := range formKeys {
		forms = append(forms, map[string]any{"required": []any{k}})
	}
	return map[string]any{
		"$schema":              "https://json-schema.org/draft/2020-12/schema",
		"$id":                  SchemaID,
		"title":                "clinicbridge mapping",
		"description":          "Turns the mapping input {event, payload} into the document a sink action receives.",
		"type":                 "object",
		"required":             []any{"fields"},
		"additionalProperties": false,
		"properties": map[string]any{
			"fields": map[string]any{"$ref": "#/$defs/fields"},
			"tests": map[string]any{
				"type":        "array",
				"description": "Fixture tests run by `clinicbridge test`.",
				"items":       map[string]any{"$ref": "#/$defs/test"},
			},
		},
		"$defs": map[string]any{
			"fields": obj(map[string]any{
				"description":          "Output fields by name.",
				"minProperties":        1,
				"additionalProperties": map[string]any{"$ref": "#/$defs/field"},
			}),
			"field": obj(map[string]any{
				"description":          "One output field: exactly one of from, value, expr, template, fields (each requires fields).",
				"additionalProperties": false,
				"properties": map[string]any{
					"from":       str("A path into the input, e.g. payload.attendees[0].name. Missing parts yield null."),
					"value":      map[string]any{"description": "A literal value of any type."},
					"expr":       str("An expr-lang expression computing the value."),
					"template":   str("Text with {{ expression }} placeholders; null renders as empty text."),
					"fields":     map[string]any{"$ref": "#/$defs/fields"},
					"each":       str("An expression yielding an array: one object (fields) per element, bound as item."),
					"default":    map[string]any{"description": "Used when the value is null or \"\", or missing from lookup."},
					"required":   boolean("Fail the event when the value is null or \"\" after default."),
					"omit_empty": boolean("Leave the key out when the value is null, \"\", [] or {}."),
					"lookup": obj(map[string]any{
						"description":          "Maps the value (as text) to an output value; unknown values use default or fail.",
						"additionalProperties": true,
					}),
				},
				"oneOf":             forms,
				"dependentRequired": map[string]any{"each": []any{"fields"}},
				"if":                map[string]any{"required": []any{"fields"}},
				"then": map[string]any{"properties": map[string]any{
					"default": false,
					"lookup":  false,
				}},
			}),
			"test": obj(map[string]any{
				"additionalProperties": false,
				"properties": map[string]any{
					"name": str("What the test checks."),
					"input": obj(map[string]any{
						"description":          "The mapping input document.",
						"additionalProperties": false,
						"properties": map[string]any{
							"event":   obj(map[string]any{"additionalProperties": false, "properties": eventSchema()}),
							"payload": map[string]any{"description": "The provider's body."},
							"needs":   map[string]any{"description": "Reserved."},
						},
					}),
					"input_file":   str("A JSON file with the input document, relative to the mapping file."),
					"expect":       obj(map[string]any{"description": "The whole expected output document."}),
					"expect_error": str("Text the mapping error must contain, e.g. \"to: required\"."),
				},
				"allOf": []any{
					map[string]any{"oneOf": []any{
						map[string]any{"required": []any{"input"}},
						map[string]any{"required": []any{"input_file"}},
					}},
					map[string]any{"oneOf": []any{
						map[string]any{"required": []any{"expect"}},
						map[string]any{"required": []any{"expect_error"}},
					}},
				},
			}),
		},
	}
}

func eventSchema() map[string]any {
	m := map[string]any{}
	for _, f := range eventFields {
		m[f] = map[string]any{"type": []any{"string", "null"}}
	}
	return m
}
