"""Named AF_UNIX sockets: the file bind makes, how long its name may be (through Python and
through a C bind that passes its own addrlen), the address lengths getsockname gives back,
what connect says about stale, missing and forbidden names, unlinking a name in use, and
the names that live outside the filesystem (Linux's abstract namespace and autobind).

Each observation runs in its own scratch directory (the harness chdirs there), so the
names below are short relative paths, as in the course notes' examples.
"""
import contextlib
import ctypes
import os
import re
import select
import shutil
import socket
import stat
import sys

from . import _libc, _unprivileged, harness
from .harness import OK, UNSUPPORTED, Measured, experiment, observation, outcome

CONNECT_WINDOW = harness.scaled(2.0)  # s: a local connect or accept that takes longer is a bug, not a value
COMPONENT = 200       # bytes per directory name when building long paths (NAME_MAX is 255)
PATH_CEILING = 4096   # PATH_MAX: a bind limit above this is not a sun_path limit
# struct sockaddr_un: Linux {sa_family_t sun_family; char sun_path[108]} (110 bytes);
# macOS and FreeBSD {u_char sun_len; u_char sun_family; char sun_path[104]} (106 bytes).
# Either way sun_path starts at byte 2.
BSD_SOCKADDR = sys.platform.startswith(("darwin", "freebsd"))
SUN_PATH_OFFSET = 2
SIZEOF_SOCKADDR_UN = SUN_PATH_OFFSET + (104 if BSD_SOCKADDR else 108)
SOCKADDR_ROOM = 1024  # bytes of buffer for any address the kernel may hand back or take
KERNEL_PATH_CEILING = 1000  # past every kernel's address limit (Linux 128, BSD 255 bytes)


def stream_socket():
    return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)


def remove(path):
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@contextlib.contextmanager
def listening(name, backlog=8):
    """A stream socket bound to ``name`` and listening; its file is removed afterwards."""
    sock = stream_socket()
    try:
        sock.bind(name)
        sock.listen(backlog)
        yield sock
    finally:
        sock.close()
        remove(name)


def leave_stale(name):
    """Leave a socket file behind the way a crashed server does: bound, listening, closed."""
    with stream_socket() as sock:
        sock.bind(name)
        sock.listen(1)


def connect_outcome(name):
    """``"ok"`` or the errno of a blocking connect to ``name`` (bounded by SO_SNDTIMEO)."""
    with stream_socket() as sock:
        harness.set_send_timeout(sock, CONNECT_WINDOW)
        return outcome(sock.connect, name)


def accept_within(server, seconds=CONNECT_WINDOW):
    """The next pending connection, or Unmeasurable if none arrives within ``seconds``."""
    if not select.select([server], [], [], seconds)[0]:
        raise harness.Unmeasurable(f"no connection to accept within {seconds:g} s")
    return server.accept()[0]


def file_type(mode):
    """The kind of file an st_mode describes: "socket", "regular", "fifo", ..."""
    for test, name in ((stat.S_ISSOCK, "socket"), (stat.S_ISREG, "regular"),
                       (stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "fifo"),
                       (stat.S_ISLNK, "symlink")):
        if test(mode):
            return name
    return "other"


# --- addresses as C passes them (ctypes), past Python's own checks --------------------------

def sockaddr_un(path, addrlen):
    """A struct sockaddr_un buffer holding ``path`` (bytes), laid out for this platform."""
    buffer = ctypes.create_string_buffer(max(SOCKADDR_ROOM, addrlen + 1))
    if BSD_SOCKADDR:
        buffer[0] = min(addrlen, 255)  # sun_len; the kernel takes the length from addrlen
        buffer[1] = socket.AF_UNIX
    else:
        ctypes.c_ushort.from_buffer(buffer).value = socket.AF_UNIX
    buffer[SUN_PATH_OFFSET:SUN_PATH_OFFSET + len(path)] = path
    return buffer


def c_bind(sock, path, addrlen):
    """bind(fd, &addr, addrlen) through the C library: "ok" or the errno name."""
    bind = _libc.function("bind", ctypes.c_int, [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint])
    address = sockaddr_un(path, addrlen)
    if bind(sock.fileno(), address, addrlen) == -1:
        return harness.errno_name(ctypes.get_errno())
    return OK


def c_address_length(sock, call="getsockname"):
    """The address length getsockname (or getpeername) writes back through the C library."""
    fn = _libc.function(call, ctypes.c_int, [ctypes.c_int, ctypes.c_void_p,
                                             ctypes.POINTER(ctypes.c_uint)])
    buffer = ctypes.create_string_buffer(SOCKADDR_ROOM)
    length = ctypes.c_uint(SOCKADDR_ROOM)
    if fn(sock.fileno(), buffer, ctypes.byref(length)) == -1:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))
    return length.value


def relative_path_of_length(length):
    """A relative path of exactly ``length`` bytes, its directories made (NAME_MAX-safe)."""
    parts, room = [], length
    while room > COMPONENT + 1:
        parts.append("d" * COMPONENT)
        room -= COMPONENT + 1
    if parts:
        os.makedirs(os.path.join(*parts), exist_ok=True)
    return os.path.join(*parts, "s" * room)


# --- the file bind makes -------------------------------------------------------------------

@observation("names.bind.file_type")
def bind_file_type():
    """bind creates a file that stat reports as a socket (S_IFSOCK)."""
    with listening("s"):
        return file_type(os.lstat("s").st_mode)


def mode_under_umask(mask):
    previous = os.umask(mask)
    try:
        with listening("s"):
            return stat.S_IMODE(os.lstat("s").st_mode)
    finally:
        os.umask(previous)


@observation("names.bind.mode_follows_umask")
def bind_mode_follows_umask():
    """The socket file's permission bits are 0777 & ~umask (0755 under 022, 0700 under 077)."""
    inherited = os.umask(0o022)
    os.umask(inherited)
    modes = {mask: mode_under_umask(mask) for mask in dict.fromkeys((inherited, 0o022, 0o077))}
    follows = all(mode == 0o777 & ~mask for mask, mode in modes.items())
    return Measured(follows, modes={f"{mask:03o}": f"{mode:04o}" for mask, mode in modes.items()})


@observation("names.bind.existing_path")
def bind_existing_path():
    """bind to the name of a stale socket file (its server closed, the file left) fails."""
    try:
        leave_stale("s")
        with stream_socket() as sock:
            return outcome(sock.bind, "s")
    finally:
        remove("s")


@observation("names.bind.existing_regular_file")
def bind_existing_regular_file():
    """bind to the name of an existing regular file fails too: bind never replaces a file."""
    try:
        open("f", "w").close()
        with stream_socket() as sock:
            return outcome(sock.bind, "f")
    finally:
        remove("f")


# --- how long a name may be ------------------------------------------------------------------

def path_of_length(base, length):
    """An absolute path of exactly ``length`` bytes under ``base``, its directories made."""
    room = length - len(os.fsencode(base))  # bytes after base, each "/" included
    if room < 2:
        raise harness.Unmeasurable(f"the scratch directory alone is {len(base)} bytes")
    parts = []
    while room - (COMPONENT + 1) >= 2:  # a whole directory, and still room for a name
        parts.append("d" * COMPONENT)
        room -= COMPONENT + 1
    directory = os.path.join(base, *parts)
    os.makedirs(directory, exist_ok=True)
    return os.path.join(directory, "s" * (room - 1))


def bind_length(base, length):
    """``"ok"`` or what bind of a ``length``-byte path gives; the socket file is removed."""
    path = path_of_length(base, length)
    with stream_socket() as sock:
        result = outcome(sock.bind, path)
    if result == OK:
        remove(path)
    return result


@experiment
def path_limit():
    """The longest absolute path bind takes through Python (a binary search) and one more."""
    base = os.path.join(os.getcwd(), "p")
    os.mkdir(base)
    try:
        shortest = len(os.fsencode(base)) + 2  # base + "/" + a one-byte name
        largest, past, trials = harness.largest_accepted(
            lambda length: bind_length(base, length), shortest, PATH_CEILING)
        return {"max": largest, "past": past, "directory_bytes": len(os.fsencode(base)),
                "trials": trials}
    finally:
        shutil.rmtree(base, ignore_errors=True)


@observation("names.path.max_bytes")
def path_max_bytes():
    """The longest absolute path bind accepts through Python (CPython refuses sizeof(sun_path))."""
    limit = path_limit()
    return Measured(limit["max"], directory_bytes=limit["directory_bytes"], trials=limit["trials"])


@observation("names.path.too_long")
def path_too_long():
    """One byte more fails: refused by Python itself (no errno) before any system call."""
    return path_limit()["past"]


def kernel_bind_length(length):
    """C bind of a ``length``-byte relative path with addrlen 2 + length (no NUL): ok or errno."""
    path = relative_path_of_length(length)
    with stream_socket() as sock:
        result = c_bind(sock, os.fsencode(path), SUN_PATH_OFFSET + length)
    if result == OK:
        remove(path)
    return result


@observation("names.path.kernel_max_bytes")
def path_kernel_max_bytes():
    """The longest path the kernel binds when the caller passes addrlen 2 + length, no NUL."""
    os.mkdir("k")
    os.chdir("k")
    try:
        longest, past, trials = harness.largest_accepted(kernel_bind_length, 1,
                                                         KERNEL_PATH_CEILING)
    finally:
        os.chdir("..")
        shutil.rmtree("k", ignore_errors=True)
    return Measured(longest, one_more=past, sizeof_sun_path=SIZEOF_SOCKADDR_UN - SUN_PATH_OFFSET,
                    trials=trials)


# --- the addresses getsockname and getpeername give back -------------------------------------

@observation("names.getsockname.addrlen")
def getsockname_addrlen():
    """getsockname's addrlen: [unbound, bound "s" with addrlen sizeof(struct sockaddr_un)]."""
    with stream_socket() as unbound, stream_socket() as bound, stream_socket() as by_python:
        unbound_length = c_address_length(unbound)
        try:
            result = c_bind(bound, b"s", SIZEOF_SOCKADDR_UN)
            if result != OK:
                raise harness.Unmeasurable(f"bind('s', addrlen {SIZEOF_SOCKADDR_UN}): {result}")
            bound_length = c_address_length(bound)
            by_python.bind("p")
            python_length = c_address_length(by_python)
        finally:
            remove("s")
            remove("p")
    return Measured([unbound_length, bound_length], bind_addrlen=SIZEOF_SOCKADDR_UN,
                    bound_by_python_bind=python_length)


@observation("names.getpeername.after_peer_close")
def getpeername_after_peer_close():
    """After the accepted end closes, getpeername on the client still names the listener."""
    with listening("s") as server, stream_socket() as client:
        harness.set_send_timeout(client, CONNECT_WINDOW)
        client.connect("s")
        with accept_within(server):
            before = client.getpeername()
        # the accepted socket is closed here: the client's peer is gone
        try:
            after = client.getpeername()
        except OSError as exc:
            return Measured(harness.errno_name(exc), before=repr(before))
    kind = "peer-name" if after == before and after else "unnamed" if not after else "other"
    return Measured(kind, before=repr(before), after=repr(after))


# --- what connect says -----------------------------------------------------------------------

@observation("names.connect.stale")
def connect_stale():
    """connect to a socket file whose server has closed is refused."""
    try:
        leave_stale("s")
        return connect_outcome("s")
    finally:
        remove("s")


@observation("names.connect.missing")
def connect_missing():
    """connect to a name that does not exist fails with ENOENT."""
    return connect_outcome("missing")


@observation("names.connect.not_a_socket")
def connect_not_a_socket():
    """connect to a regular file fails: ECONNREFUSED on Linux, ENOTSOCK on macOS and FreeBSD."""
    try:
        open("f", "w").close()
        return connect_outcome("f")
    finally:
        remove("f")


@contextlib.contextmanager
def searchable_directory(name):
    """A subdirectory others may enter (0711) but not list; removed afterwards."""
    os.mkdir(name)
    try:
        os.chmod(name, 0o711)  # whatever the umask: enter, not list
        yield os.path.abspath(name)
    finally:
        shutil.rmtree(name, ignore_errors=True)


def connect_and_say_who(name):
    """Run in the unprivileged child: the connect's outcome and who tried it."""
    return {"outcome": connect_outcome(name), "uid": os.geteuid(), "gid": os.getegid()}


@observation("names.connect.no_write_permission")
def connect_no_write_permission():
    """A non-root user without write permission on the socket file cannot connect (EACCES)."""
    with searchable_directory("d") as directory, listening("d/s"):
        os.chmod("d/s", 0o555)  # read and search for everyone, write for no one
        as_root = connect_outcome("d/s") if os.geteuid() == 0 else None
        try:
            denied = _unprivileged.run_unprivileged(connect_and_say_who, directory, "s")
            os.chmod("d/s", 0o333)  # write only: all that connect needs
            allowed = _unprivileged.run_unprivileged(connect_and_say_who, directory, "s")
        except _unprivileged.CannotDrop as refused:
            return Measured(UNSUPPORTED, reason=str(refused))
    if allowed["outcome"] != OK:  # then the refusal was not about the write bit
        raise harness.Unmeasurable(f"with write permission the connect still gave "
                                   f"{allowed['outcome']}, so {denied['outcome']} says nothing")
    detail = {"as_uid": denied["uid"], "as_gid": denied["gid"],
              "with_write_only": allowed["outcome"]}
    if as_root is not None:
        detail["as_root"] = as_root  # root passes the check: why the probe drops privileges
    return Measured(denied["outcome"], **detail)


# --- unlinking a name in use -----------------------------------------------------------------

def exchange(one, other):
    """Both directions of a connected pair carry a message (each read bounded)."""
    one.sendall(b"ping")
    there = harness.bounded_recv(other, lambda: other.recv(16), CONNECT_WINDOW)
    other.sendall(b"pong")
    back = harness.bounded_recv(one, lambda: one.recv(16), CONNECT_WINDOW)
    return there == b"ping" and back == b"pong"


@experiment
def unlink_while_bound():
    """Unlink a listening socket's file, then use the old connection, connect anew, bind again."""
    with listening("s") as server, stream_socket() as client:
        harness.set_send_timeout(client, CONNECT_WINDOW)
        client.connect("s")
        with accept_within(server) as accepted:
            os.unlink("s")
            existing = exchange(client, accepted)
            new_connect = connect_outcome("s")
            with stream_socket() as successor:
                rebind = outcome(successor.bind, "s")
                if rebind == OK:
                    successor.listen(1)
                    reaches_successor = connect_outcome("s")
                else:
                    reaches_successor = None
    return {"existing": existing, "new_connect": new_connect, "rebind": rebind,
            "reaches_successor": reaches_successor}


@observation("names.unlink_while_bound.existing_connection")
def unlink_existing_connection():
    """After the listener's file is unlinked an accepted connection still works both ways."""
    return unlink_while_bound()["existing"]


@observation("names.unlink_while_bound.new_connect")
def unlink_new_connect():
    """After the listener's file is unlinked a new connect to the name fails: ENOENT."""
    return unlink_while_bound()["new_connect"]


@observation("names.rebind_after_unlink")
def rebind_after_unlink():
    """Once unlinked, the name can be bound by a new socket while the old one is still open."""
    result = unlink_while_bound()
    return Measured(result["rebind"], connect_reaches_new_socket=result["reaches_successor"])


# --- names outside the filesystem -------------------------------------------------------------

@observation("names.abstract")
def abstract():
    """bind to a name that starts with NUL works on Linux (no file); ENOENT on macOS and FreeBSD."""
    name = f"\0ipcmatrix-{os.getpid()}"  # abstract names are shared by the whole netns
    with stream_socket() as server:
        result = outcome(server.bind, name)
        files = sorted(os.listdir("."))
        if result != OK:
            return Measured(result, files_made=files)
        server.listen(1)
        return Measured(result, files_made=files, connect=connect_outcome(name),
                        name=repr(server.getsockname()))


def abstract_name(stem):
    """A leading-NUL name no other run uses: abstract names are shared by the whole netns."""
    return f"\0ipcmatrix-{stem}-{os.getpid()}-{os.urandom(3).hex()}"


@observation("names.abstract.no_permission_check")
def abstract_no_permission_check():
    """A process without permission connects to an abstract socket made under umask 077 (no check)."""
    previous = os.umask(0o077)
    try:
        with stream_socket() as server, searchable_directory("d") as directory, \
                listening("d/s"):
            name = abstract_name("perm")
            bound = outcome(server.bind, name)
            if bound != OK:
                return Measured(UNSUPPORTED, abstract_bind=bound)
            server.listen(1)
            os.chmod("d/s", 0)  # the control: a file nobody but root may connect to
            try:
                abstract_result = _unprivileged.run_unprivileged(connect_and_say_who, directory,
                                                                 name)
                control = _unprivileged.run_unprivileged(connect_and_say_who, directory, "s")
            except _unprivileged.CannotDrop as refused:
                return Measured(UNSUPPORTED, reason=str(refused))
    finally:
        os.umask(previous)
    if control["outcome"] == OK:
        raise harness.Unmeasurable(f"uid {control['uid']} connected to a mode-0 socket file "
                                   f"too, so the abstract connect shows nothing")
    return Measured(abstract_result["outcome"], as_uid=abstract_result["uid"],
                    creator_uid=os.geteuid(), creator_umask="077",
                    mode_0_file_control=control["outcome"])


@observation("names.autobind")
def autobind():
    """bind to the empty address gives the socket a kernel-chosen name (Linux: NUL + 5 hex)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        result = outcome(sock.bind, "")
        if result != OK:
            return result
        name = sock.getsockname()
        if not name:
            return Measured("unnamed", name=repr(name))
        autobound = isinstance(name, bytes) and re.fullmatch(rb"\0[0-9a-f]{5}", name) is not None
        return Measured(OK, name=repr(name), nul_and_five_hex_digits=autobound)


if __name__ == "__main__":
    harness.main()
