#!/usr/bin/python3
"""Fix-ups applied to the c_glib code that `thrift --gen c_glib` generates, at build time.

1. Thrift 0.17's generated *_finalize functions free their fields but never chain up to the
   parent class's finalize, so GObject's own finalize never runs and the object's qdata (GLib
   keeps a notify queue there while an object is released) leaks: 48 bytes for many objects
   decoded or built, a real leak in a server that makes millions of them. This adds the
   chain-up.
2. Its *_get_type functions register the type on first use without a lock
   (`static GType type = 0; if (type == 0) type = g_type_register_static (...)`): two IO loops
   decoding their first request at once both register, the loser gets 0 and writes it over the
   real type, and the type is broken for the life of the process (a crash). This makes them use
   g_once_init_enter, as G_DEFINE_TYPE does.

Usage: cglib_fixup.py FILE.c...
"""
import re
import sys

FINALIZE = re.compile(r'^static void\s*\n(\w+)_finalize \(GObject \*object\)\n\{\n', re.M)
# Every generated struct, union and exception type derives from ThriftStruct directly; naming
# that parent (rather than the runtime class's parent) stays right even if a generated type
# were ever subclassed.
CHAIN_UP = ('\n  /* added by cmake/cglib_fixup.py: chain up, so that GObject frees its own data */\n'
            '  G_OBJECT_CLASS (g_type_class_peek (THRIFT_TYPE_STRUCT))->finalize (object);\n')


def fix(text):
    out, pos, count = [], 0, 0
    for m in FINALIZE.finditer(text):
        end = text.index('\n}\n', m.end())  # generated functions close at column 0
        body = text[m.end():end]
        out.append(text[pos:end])
        # A finalizer that already chains up (the service classes') is left alone.
        if 'cglib_fixup' not in body and '->finalize' not in body:
            out.append(CHAIN_UP)
            count += 1
        pos = end
    out.append(text[pos:])
    return ''.join(out), count


GET_TYPE_HEAD = re.compile(r'\n  static GType type = 0;\n\s*if \(type == 0\)\s*\n  \{\n')
GET_TYPE_TAIL = re.compile(r'\n  \}\n\s*return type;\n\}')


def fix_get_type(text):
    out, pos, count = [], 0, 0
    for m in GET_TYPE_HEAD.finditer(text):
        tail = GET_TYPE_TAIL.search(text, m.end())
        out.append(text[pos:m.start()])
        out.append('\n  /* made thread-safe by cmake/cglib_fixup.py */\n'
                   '  static gsize type_once = 0;\n  static GType type = 0;\n'
                   '  if (g_once_init_enter (&type_once))\n  {\n')
        out.append(text[m.end():tail.start()])
        out.append('\n    g_once_init_leave (&type_once, 1);')
        pos = tail.start()
        count += 1
    out.append(text[pos:])
    return ''.join(out), count


def main(paths):
    for path in paths:
        with open(path) as f:
            text = f.read()
        text, finalizers = fix(text)
        text, get_types = fix_get_type(text)
        with open(path, 'w') as f:
            f.write(text)
        print(f'cglib_fixup: {path}: {finalizers} finalizers chain up, '
              f'{get_types} get_type functions are thread-safe')


if __name__ == '__main__':
    main(sys.argv[1:])
