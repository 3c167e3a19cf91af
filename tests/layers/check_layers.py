#!/usr/bin/env python3
"""check_layers: fails when a file includes a header of a layer above its own.

The build already refuses most such includes (each layer's library sees only the include
folders of the layers below it, docs/ARCHITECTURE.md), but a header that happens to include
nothing unknown, or a folder added to a target by hand, would slip through; this reads the
tree itself. Usage: check_layers.py SOURCE_DIR. Prints every offending include as
FILE:LINE: LAYER includes NAME (LAYER) and exits 1; exits 0 when there is none.
"""
import os
import re
import sys

# What each layer may include, itself included. The arrows of the build:
#   core <- wire <- rpc <- handlers <- server;  core <- storage <- handlers
MAY_INCLUDE = {
    'core': {'core'},
    'wire': {'core', 'wire'},
    'rpc': {'core', 'wire', 'rpc'},
    'storage': {'core', 'storage'},
    'handlers': {'core', 'wire', 'rpc', 'storage', 'handlers'},
    'server': {'core', 'wire', 'rpc', 'storage', 'handlers', 'server'},
}
# Headers generated into the build tree, by the layer that owns them.
GENERATED = {'evdal_data_access.h': 'wire', 'evdal_evdal_types.h': 'wire'}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def layer_of_headers(root):
    owner = dict(GENERATED)
    for layer in MAY_INCLUDE:
        for name in os.listdir(os.path.join(root, layer)):
            if name.endswith('.h'):
                owner[name] = layer
    return owner


def problems(root):
    owner = layer_of_headers(root)
    for layer, allowed in MAY_INCLUDE.items():
        folder = os.path.join(root, layer)
        for name in sorted(os.listdir(folder)):
            if not name.endswith(('.c', '.h')):
                continue
            path = os.path.join(folder, name)
            with open(path, encoding='utf-8') as f:
                for n, line in enumerate(f, 1):
                    m = INCLUDE.match(line)
                    if not m:
                        continue
                    target = owner.get(os.path.basename(m.group(1)))
                    if target is not None and target not in allowed:
                        yield '%s/%s:%d: %s includes %s (%s)' % (layer, name, n, layer,
                                                                m.group(1), target)


def self_test():
    """The checker on a made-up tree: one upward include, one allowed, one generated."""
    import tempfile
    with tempfile.TemporaryDirectory() as root:
        for layer in MAY_INCLUDE:
            os.mkdir(os.path.join(root, layer))
        files = {'core/evd_a.h': '#include "evd_b.h"\n#include "evd_a.h"\n',
                 'handlers/evd_b.h': '#include "evd_a.h"\n',
                 'storage/evd_c.c': '#include <glib.h>\n#include "evdal_evdal_types.h"\n'}
        for path, text in files.items():
            with open(os.path.join(root, path), 'w', encoding='utf-8') as f:
                f.write(text)
        found = list(problems(root))
    expected = ['core/evd_a.h:1: core includes evd_b.h (handlers)',
                'storage/evd_c.c:2: storage includes evdal_evdal_types.h (wire)']
    if found != expected:
        print('self-test: expected %r, found %r' % (expected, found))
        return 1
    return 0


def main():
    if self_test():
        return 1
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), '..', '..')
    found = list(problems(root))
    for p in found:
        print(p)
    if found:
        print('%d include(s) of a higher layer' % len(found))
        return 1
    print('layers: no file includes a header of a layer above its own')
    return 0


if __name__ == '__main__':
    sys.exit(main())
