#!/usr/bin/env python3
"""The wire contract check: proto/ternps/v1 against its committed baseline.

    tests/proto/contract_check.py [--protoc /usr/bin/protoc] [--update]

Compiles proto/ternps/v1/ternps.proto to descriptors (protoc --descriptor_set_out), reduces
them to what a client depends on (per message: each field's name, number, type, message or
enum type, repeated or not, proto3 optional; per enum: each value's name and number; per
service: each method's request and response types and streaming), adds the file's table of wire
defaults (its "default <Message>.<field> = <value>" lines), and compares that with
proto/ternps/v1/contract.json.

Fails (exit 1, one line per difference) on: a message, field, enum value, service or method
removed or renamed; a field renumbered, retyped, made repeated or not, optional or not; an enum
value's number changed or an old number reused; a wire default changed or removed; anything
added that the baseline lacks (an addition is allowed in v1, but the baseline must record it:
run with --update and commit contract.json in the same change). --update rewrites the baseline
after checking that the change is compatible (it refuses otherwise).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO = "ternps/v1/ternps.proto"
BASELINE = os.path.join(ROOT, "proto", "ternps", "v1", "contract.json")
DEFAULT_LINE = re.compile(r"^//\s+default\s+(\S+)\s+=\s+(\S+)\s*$")


def describe(protoc, proto_dir):
    from google.protobuf import descriptor_pb2
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "set.pb")
        subprocess.run([protoc, f"-I{proto_dir}", f"--descriptor_set_out={out}", PROTO],
                       check=True)
        with open(out, "rb") as f:
            files = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    FD = descriptor_pb2.FieldDescriptorProto
    contract = {"package": "", "messages": {}, "enums": {}, "services": {}}
    for file in files.file:
        contract["package"] = file.package

        def enum(prefix, e):
            contract["enums"][f"{prefix}.{e.name}"] = {v.name: v.number for v in e.value}

        def message(prefix, m):
            name = f"{prefix}.{m.name}"
            fields = {}
            for f in m.field:
                fields[f.name] = {
                    "number": f.number,
                    "type": FD.Type.Name(f.type),
                    "type_name": f.type_name,
                    "repeated": f.label == FD.LABEL_REPEATED,
                    "optional": f.proto3_optional,
                }
            contract["messages"][name] = {"fields": fields,
                                          "reserved_numbers": sorted(
                                              n for r in m.reserved_range
                                              for n in range(r.start, r.end)),
                                          "reserved_names": sorted(m.reserved_name)}
            for nested in m.nested_type:
                message(name, nested)
            for e in m.enum_type:
                enum(name, e)

        for m in file.message_type:
            message(file.package, m)
        for e in file.enum_type:
            enum(file.package, e)
        for s in file.service:
            contract["services"][f"{file.package}.{s.name}"] = {
                m.name: {"input": m.input_type, "output": m.output_type,
                         "client_streaming": m.client_streaming,
                         "server_streaming": m.server_streaming}
                for m in s.method}
    defaults = {}
    with open(os.path.join(proto_dir, PROTO)) as f:
        for line in f:
            match = DEFAULT_LINE.match(line.strip())
            if match:
                if match.group(1) in defaults:
                    raise SystemExit(f"contract_check: wire default {match.group(1)} twice")
                defaults[match.group(1)] = match.group(2)
    contract["wire_defaults"] = defaults
    return contract


def compare(old, new):
    """(breaking differences, additions)."""
    breaking, added = [], []
    if old["package"] != new["package"]:
        breaking.append(f"package: {old['package']} became {new['package']}")
    for name, m in old["messages"].items():
        if name not in new["messages"]:
            breaking.append(f"message {name}: removed or renamed")
            continue
        fields = new["messages"][name]["fields"]
        by_number = {f["number"]: n for n, f in fields.items()}
        for field, f in m["fields"].items():
            where = f"{name}.{field}"
            if field not in fields:
                other = by_number.get(f["number"])
                breaking.append(f"field {where} ({f['number']}): removed" +
                                (f", its number now used by '{other}'" if other else ""))
                continue
            g = fields[field]
            for key in ("number", "type", "type_name", "repeated", "optional"):
                if f[key] != g[key]:
                    breaking.append(f"field {where}: {key} {f[key]} became {g[key]}")
        for field, g in fields.items():
            if field not in m["fields"]:
                old_numbers = {f["number"] for f in m["fields"].values()}
                if g["number"] in old_numbers or g["number"] in m["reserved_numbers"]:
                    breaking.append(f"field {name}.{field}: reuses number {g['number']}")
                else:
                    added.append(f"field {name}.{field} ({g['number']})")
    for name in new["messages"]:
        if name not in old["messages"]:
            added.append(f"message {name}")
    for name, values in old["enums"].items():
        if name not in new["enums"]:
            breaking.append(f"enum {name}: removed or renamed")
            continue
        now = new["enums"][name]
        for value, number in values.items():
            if value not in now:
                breaking.append(f"enum value {name}.{value} ({number}): removed or renamed")
            elif now[value] != number:
                breaking.append(f"enum value {name}.{value}: number {number} became {now[value]}")
        for value, number in now.items():
            if value not in values:
                if number in values.values():
                    breaking.append(f"enum value {name}.{value}: reuses number {number}")
                else:
                    added.append(f"enum value {name}.{value} ({number})")
    for name in new["enums"]:
        if name not in old["enums"]:
            added.append(f"enum {name}")
    for name, methods in old["services"].items():
        now = new["services"].get(name)
        if now is None:
            breaking.append(f"service {name}: removed or renamed")
            continue
        for method, sig in methods.items():
            if method not in now:
                breaking.append(f"method {name}.{method}: removed or renamed")
            elif now[method] != sig:
                breaking.append(f"method {name}.{method}: {sig} became {now[method]}")
        for method in now:
            if method not in methods:
                added.append(f"method {name}.{method}")
    for field, value in old["wire_defaults"].items():
        if field not in new["wire_defaults"]:
            breaking.append(f"wire default {field} (= {value}): removed from the table")
        elif new["wire_defaults"][field] != value:
            breaking.append(f"wire default {field}: {value} became {new['wire_defaults'][field]}")
    for field, value in new["wire_defaults"].items():
        if field not in old["wire_defaults"]:
            added.append(f"wire default {field} = {value}")
    return breaking, added


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protoc", default="protoc")
    ap.add_argument("--proto_dir", default=os.path.join(ROOT, "proto"))
    ap.add_argument("--baseline", default=BASELINE)
    ap.add_argument("--update", action="store_true",
                    help="record a compatible change (additions) in the baseline")
    args = ap.parse_args()
    new = describe(args.protoc, args.proto_dir)
    with open(args.baseline) as f:
        old = json.load(f)
    breaking, added = compare(old, new)
    for line in breaking:
        print(f"contract_check: incompatible with v1: {line}")
    if breaking:
        print("contract_check: a client written from the baseline would break; within v1 only "
              "additions are allowed (ternps.proto, \"Compatibility within v1\")")
        return 1
    if args.update:
        with open(args.baseline, "w") as f:
            json.dump(new, f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"contract_check: baseline updated ({len(added)} additions)")
        return 0
    for line in added:
        print(f"contract_check: not in the baseline: {line}")
    if added:
        print("contract_check: record the additions: tests/proto/contract_check.py --update, and "
              "commit proto/ternps/v1/contract.json")
        return 1
    print(f"contract_check: {len(new['messages'])} messages, {len(new['enums'])} enums, "
          f"{len(new['wire_defaults'])} wire defaults: as in the baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
