/// JSON Schema (2020-12) generated from the same shapes the decoder enforces.
public enum JSONSchema {
    public static let dialect = "https://json-schema.org/draft/2020-12/schema"

    /// The schemas `agentry schema` prints, by name: one per kind, `skill`, and `resource` (any kind).
    public static let names = Kind.allCases.map(\.slug) + ["skill", "resource"]

    public static func document(named name: String) -> JSON? {
        if let kind = Kind.allCases.first(where: { $0.slug == name }) {
            return kindDocument(kind)
        }
        switch name {
        case "skill":
            return .object(
                header(id: "skill", title: "Agent Skills SKILL.md front matter")
                    + objectBody(ObjectShape.skillFrontMatter, additional: true))
        case "resource":
            return resourceDocument()
        default:
            return nil
        }
    }

    static func header(id: String, title: String) -> [(String, JSON)] {
        [
            ("$schema", .string(dialect)),
            ("$id", .string("urn:agentry:schema:v1:\(id)")),
            ("title", .string(title)),
        ]
    }

    static func kindDocument(_ kind: Kind) -> JSON {
        .object(header(id: kind.slug, title: "agentry/v1 \(kind.rawValue)") + objectBody(kind.shape, additional: false))
    }

    /// Any resource: dispatches on `kind`, for editors that map one schema to every file.
    static func resourceDocument() -> JSON {
        var definitions: [(String, JSON)] = []
        var branches: [JSON] = []
        for kind in Kind.allCases {
            definitions.append((kind.rawValue, .object(objectBody(kind.shape, additional: false))))
            branches.append(
                .object([
                    (
                        "if",
                        .object([
                            ("properties", .object([("kind", .object([("const", .string(kind.rawValue))]))])),
                            ("required", .array([.string("kind")])),
                        ])
                    ),
                    ("then", .object([("$ref", .string("#/$defs/\(kind.rawValue)"))])),
                ]))
        }
        return .object(
            header(id: "resource", title: "agentry/v1 resource (any kind)") + [
                ("description", .string("An agentry/v1 resource document: Agent, Harness, Model or Environment.")),
                ("type", .string("object")),
                ("required", .array([.string("apiVersion"), .string("kind")])),
                (
                    "properties",
                    .object([
                        ("apiVersion", .object([("const", .string(Kind.apiVersion))])),
                        ("kind", .object([("enum", .array(Kind.allCases.map { .string($0.rawValue) }))])),
                    ])
                ),
                ("allOf", .array(branches)),
                ("$defs", .object(definitions)),
            ])
    }

    static func objectBody(_ object: ObjectShape, additional: Bool) -> [(String, JSON)] {
        var pairs: [(String, JSON)] = [
            ("description", .string(object.doc)),
            ("type", .string("object")),
        ]
        let required = object.fields.filter(\.required).map { JSON.string($0.name) }
        if !required.isEmpty { pairs.append(("required", .array(required))) }
        pairs.append(
            (
                "properties",
                .object(
                    object.fields.map { field in
                        (field.name, schema(field.shape, doc: field.doc))
                    })
            ))
        pairs.append(("additionalProperties", .bool(additional)))
        return pairs
    }

    static func schema(_ shape: Shape, doc: String? = nil) -> JSON {
        var pairs: [(String, JSON)] = []
        if let doc { pairs.append(("description", .string(doc))) }
        switch shape {
        case .string(let format):
            pairs += stringKeywords(format)
        case .integer(let min, let max):
            pairs += [("type", .string("integer")), ("minimum", .int(min)), ("maximum", .int(max))]
        case .boolean:
            pairs.append(("type", .string("boolean")))
        case .list(let item, let minItems, let unique):
            pairs += [("type", .string("array")), ("items", schema(item))]
            if minItems > 0 { pairs.append(("minItems", .int(minItems))) }
            if unique { pairs.append(("uniqueItems", .bool(true))) }
        case .object(let object):
            let body = objectBody(object, additional: false)
            // The field's own doc wins over the object's generic one.
            pairs += doc == nil ? body : body.filter { $0.0 != "description" }
        case .map(let key, let value):
            pairs += [
                ("type", .string("object")),
                ("propertyNames", .object(stringKeywords(key).filter { $0.0 != "type" })),
                ("additionalProperties", schema(value)),
            ]
        case .choice(let alternatives):
            pairs.append(("anyOf", .array(alternatives.map { schema($0) })))
        }
        return .object(pairs)
    }

    static func stringKeywords(_ format: StringFormat) -> [(String, JSON)] {
        var pairs: [(String, JSON)] = [("type", .string("string"))]
        switch format {
        case .constant(let value):
            pairs.append(("const", .string(value)))
        case .oneOf(let values):
            pairs.append(("enum", .array(values.map { .string($0) })))
        case .text(let minLength, let maxLength):
            if minLength > 0 { pairs.append(("minLength", .int(minLength))) }
            if let maxLength { pairs.append(("maxLength", .int(maxLength))) }
        default:
            if let pattern = format.pattern { pairs.append(("pattern", .string(pattern))) }
            if let maxLength = format.maxLength { pairs.append(("maxLength", .int(maxLength))) }
        }
        return pairs
    }
}
