#!/usr/bin/env python3
"""Writes a keygate.toml with N clients, half with generated `kg_` keys and half with
hand-made `sha256:` keys, and prints one key of each kind (the last ones written).

    bench/many-clients.py N OUT.toml SECRET
"""
import hashlib
import sys
import zlib

n, out, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3]
kg_key = seed_key = None
with open(out, "w") as f:
    f.write(f'[server]\nlisten = "127.0.0.1:0"\n\n[token]\nsecret = "{secret}"\n\n')
    for i in range(n):
        cid = f"client-{i}"
        if i % 2 == 0:
            body = f"kg_{cid}_" + hashlib.sha256(f"secret-{i}".encode()).hexdigest()
            key = body + f"{zlib.crc32(body.encode()) & 0xffffffff:08x}"
            kg_key = key
        else:
            key = f"hand-made-key-number-{i}-of-the-seed-style"
            seed_key = key
        digest = hashlib.sha256(key.encode()).hexdigest()
        f.write(f'[[clients]]\nid = "{cid}"\nkey_hash = "sha256:{digest}"\nrole = "service"\nscopes = ["orders:read"]\n\n')
print(kg_key)
print(seed_key)
