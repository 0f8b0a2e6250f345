#!/usr/bin/env python3
"""Runs the Argo CD health checks (Lua) shipped in charts/mailsec-operator/docs/argocd/ against
objects, the way Argo CD does: the object as the global `obj`, the script's returned table as
the health. Uses the `lupa` wheel (a real Lua interpreter); scripts/setup.sh installs it.

  argocd_health.py LUA_DIR < objects.json     # a JSON list of objects, or a v1 List
prints [{"kind", "name", "status", "message"}, ...] as JSON.
"""
import json
import os
import sys

from lupa import LuaRuntime


def main() -> int:
    lua_dir = sys.argv[1]
    scripts = {
        "Tenant": open(os.path.join(lua_dir, "tenant.lua"), encoding="utf-8").read(),
        "Subscription": open(os.path.join(lua_dir, "subscription.lua"), encoding="utf-8").read(),
    }
    doc = json.load(sys.stdin)
    items = doc["items"] if isinstance(doc, dict) else doc
    out = []
    for item in items:
        lua = LuaRuntime(unpack_returned_tuples=True)
        lua.globals().obj = lua.table_from(item, recursive=True)
        hs = lua.execute(scripts[item["kind"]])
        out.append({
            "kind": item["kind"],
            "name": item["metadata"]["name"],
            "status": hs["status"],
            "message": hs["message"],
        })
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
