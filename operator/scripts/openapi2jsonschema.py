#!/usr/bin/env python3
"""Turns a Kubernetes swagger.json (OpenAPI v2) into the standalone, strict
JSON schemas kubeconform reads (`<kind><-group><-version>.json`), offline.

    openapi2jsonschema.py SWAGGER_JSON OUT_DIR

Standalone: every `$ref` is inlined (recursive definitions such as the CRD
JSONSchemaProps are cut off with an open schema). Strict: objects with
declared properties reject unknown fields. Optional fields accept null, and
int-or-string / quantity fields accept both strings and numbers, as the API
server does. Standard library only.
"""
import json
import os
import sys


def suffix(group, version):
    first = group.split(".")[0].lower() if group else ""
    return f"-{first}-{version}".lower() if first else f"-{version}".lower()


def convert(defs, schema, stack):
    if isinstance(schema, list):
        return [convert(defs, s, stack) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        name = schema["$ref"].split("/")[-1]
        if name in stack:
            return {}  # recursive definition: accept anything below here
        return convert(defs, defs[name], stack | {name})
    out = {}
    for k, v in schema.items():
        if k in ("properties", "patternProperties"):
            out[k] = {pk: convert(defs, pv, stack) for pk, pv in v.items()}
        elif k in ("items", "additionalProperties", "allOf", "anyOf", "oneOf", "not"):
            out[k] = convert(defs, v, stack)
        elif k.startswith("x-kubernetes") or k in ("description",):
            continue
        else:
            out[k] = v
    fmt = out.get("format")
    if fmt == "int-or-string":
        return {"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
        required = set(out.get("required", []))
        for pk, pv in out["properties"].items():
            if pk not in required and isinstance(pv, dict) and "type" in pv and isinstance(pv["type"], str):
                pv["type"] = [pv["type"], "null"]
    return out


def quantity_fix(defs):
    q = "io.k8s.apimachinery.pkg.api.resource.Quantity"
    if q in defs:
        defs[q] = {"oneOf": [{"type": "string"}, {"type": "number"}]}


def main():
    swagger, out_dir = sys.argv[1], sys.argv[2]
    with open(swagger) as f:
        defs = json.load(f)["definitions"]
    quantity_fix(defs)
    os.makedirs(out_dir, exist_ok=True)
    count = 0
    for name, d in defs.items():
        for gvk in d.get("x-kubernetes-group-version-kind", []):
            schema = convert(defs, d, {name})
            props = schema.get("properties", {})
            # apiVersion and kind are what kubeconform matched on: require them.
            for key in ("apiVersion", "kind"):
                if key in props:
                    props[key] = {"type": "string"}
            path = os.path.join(out_dir, f"{gvk['kind'].lower()}{suffix(gvk.get('group', ''), gvk['version'])}.json")
            with open(path, "w") as f:
                json.dump(schema, f)
            count += 1
    print(f"wrote {count} schemas to {out_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
