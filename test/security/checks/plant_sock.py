#!/usr/bin/python3
"""An attacker's plants on SquashFS rendezvous names (native/core/holder.c).

  plant_sock.py plant NAME[:listen|:bound]...   bind each abstract NAME; a
      listening one answers every connection with a forged holder reply (the
      magic, a made-up identity) and this process's own user and mount
      namespaces; print "planted" and serve until killed.
  plant_sock.py grab NAME   connect to NAME (a victim's holder) and report what
      came back: "fds N bytes M" (N descriptors), or "nothing".
"""
import os, select, socket, struct, sys

MAGIC = 0x6368686f6c643031  # "chhold01", holder.c's HOLDER_MAGIC


def forged():
    return struct.pack('<Q', MAGIC) + struct.pack('<11Q', *range(1, 12))


def plant(specs):
    listening = []
    keep = []
    for spec in specs:
        name, _, how = spec.partition(':')
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind('\0' + name)
        if how != 'bound':
            s.listen(64)
            listening.append(s)
        keep.append(s)
    ns = [os.open('/proc/self/ns/user', os.O_RDONLY), os.open('/proc/self/ns/mnt', os.O_RDONLY)]
    print('planted', flush=True)
    while True:
        ready, _, _ = select.select(listening, [], [], 1.0)
        for s in ready:
            c, _ = s.accept()
            try:
                socket.send_fds(c, [forged()], ns)
            except OSError:
                pass
            c.close()


def grab(name):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect('\0' + name)
    try:
        msg, fds, _, _ = socket.recv_fds(s, 4096, 8)
    except (ConnectionResetError, socket.timeout):
        msg, fds = b'', []
    print(f'fds {len(fds)} bytes {len(msg)}' if fds or msg else 'nothing', flush=True)


if __name__ == '__main__':
    if sys.argv[1] == 'plant':
        plant(sys.argv[2:])
    else:
        grab(sys.argv[2])
