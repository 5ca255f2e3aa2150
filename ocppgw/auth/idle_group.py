"""A CPU group at idle priority for the hashing processes, where the system lets the gateway make one.

Why: in a bcrypt storm on two vCPUs, the hashing process at nice 10 in an autogroup of its own still
took the CPU that the connected charge points' round trips needed (storm p99 2.7-3.9 times the calm
one). In a group with ``cpu.idle = 1`` (the kernel's ``SCHED_IDLE`` for a whole group: any other
task preempts it at once, across autogroups, which ``SCHED_IDLE`` on the process cannot do) it was
1.4-1.9 times, for about half as many bcrypt handshakes a second while the machine is busy
(bench/README.md, issue 10, "Eleventh session"). bcrypt then uses only CPU nothing else wants.

Where the group goes:

- cgroup v1: ``ocppgw-hashing`` under the gateway's own group of the ``cpu`` hierarchy (writable by
  root);
- cgroup v2: ``ocppgw-hashing`` beside the gateway's own group, when their parent hands the ``cpu``
  controller to its children or lets the gateway do so (systemd: ``Delegate=cpu`` with
  ``DelegateSubgroup=``, see deploy/). v2 lets no group with processes of its own hand controllers
  down, so the gateway's own group cannot be the parent.

Anywhere else (no permission, a kernel before 5.15 without ``cpu.idle``, a container's read-only
hierarchy) nothing changes: the hashing processes keep nice 10 in an autogroup of their own, and
the reason is logged once at start-up.
"""

from __future__ import annotations

from pathlib import Path

GROUP_NAME = "ocppgw-hashing"
_ATTEMPTS = 3


class IdleGroup:
    """A cgroup directory whose ``cpu.idle`` is 1."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def join(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into the group; raises ``OSError`` as the kernel does.
        The group is made again when gone: another gateway sharing it may have removed it on stop."""
        try:
            (self.path / "cgroup.procs").write_text(f"{pid}\n")
        except FileNotFoundError:
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.idle").write_text("1\n")
            (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def remove(self) -> None:
        """Remove the group once empty; kept while another gateway's processes are still in it."""
        try:
            self.path.rmdir()
        except OSError:
            pass


def _mounts(proc: Path) -> list[tuple[str, str, str, set[str]]]:
    """(root, mount point, filesystem type, super options) of each mount in ``proc/mountinfo``."""
    mounts = []
    for line in (proc / "mountinfo").read_text().splitlines():
        fields = line.split(" - ", 1)
        if len(fields) != 2:
            continue
        before, after = fields[0].split(), fields[1].split()
        if len(before) < 5 or len(after) < 3:
            continue
        root, point = _unescape(before[3]), _unescape(before[4])
        mounts.append((root, point, after[0], set(after[2].split(","))))
    return mounts


def _unescape(field: str) -> str:
    """mountinfo's octal escapes (``\\040`` for a space) undone."""
    return field.encode("latin-1").decode("unicode_escape") if "\\" in field else field


def _under(mount_root: str, point: str, path: str) -> Path | None:
    """Where the group ``path`` (as ``/proc/self/cgroup`` names it) lies under a mount of its hierarchy."""
    if mount_root != "/" and not (path == mount_root or path.startswith(mount_root + "/")):
        return None
    relative = path[len(mount_root) :] if mount_root != "/" else path
    return Path(point) / relative.lstrip("/")


def _own_group(proc: Path) -> tuple[int, str] | None:
    """(1 or 2, path) of this process's group holding the ``cpu`` controller, from ``proc/cgroup``."""
    unified = None
    for line in (proc / "cgroup").read_text().splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            unified = path
        elif "cpu" in controllers.split(","):
            return 1, path
    return None if unified is None else (2, unified)


def _parent_for(version: int, path: str, proc: Path) -> tuple[Path | None, str]:
    for root, point, fstype, options in _mounts(proc):
        if version == 1 and fstype == "cgroup" and "cpu" in options:
            where = _under(root, point, path)
            if where is not None:
                return where, ""
        if version == 2 and fstype == "cgroup2":
            where = _under(root, point, path)
            if where is not None:
                return _delegating_parent(where)
    return None, f"the cgroup v{version} hierarchy of {path} is not mounted here"


def _delegating_parent(own: Path) -> tuple[Path | None, str]:
    """cgroup v2: the parent of the gateway's group, once it hands ``cpu`` to its children."""
    parent = own.parent
    control = parent / "cgroup.subtree_control"
    try:
        if "cpu" not in control.read_text().split():
            control.write_text("+cpu\n")
            if "cpu" not in control.read_text().split():
                return None, f"{control} does not take +cpu"
    except OSError as error:
        return None, f"{control}: {error.strerror or error} (systemd: Delegate=cpu, DelegateSubgroup=)"
    return parent, ""


def make_idle_group(proc: Path = Path("/proc/self")) -> tuple[IdleGroup | None, str]:
    """The hashing processes' group, made if need be: (group, where) or (None, why there is none)."""
    try:
        own = _own_group(proc)
        if own is None:
            return None, "no cgroup holds the cpu controller"
        parent, why = _parent_for(*own, proc)
        if parent is None:
            return None, why
        path = parent / GROUP_NAME
        for _attempt in range(_ATTEMPTS):  # another gateway's stop may remove it as it is made
            path.mkdir(exist_ok=True)
            idle = path / "cpu.idle"
            if not idle.exists():
                if not path.is_dir():
                    continue
                path.rmdir()
                return None, "this kernel's cgroups have no cpu.idle (Linux 5.15 or later)"
            try:
                idle.write_text("1\n")
                if idle.read_text().strip() != "1":
                    return None, f"{idle} does not keep 1"
            except FileNotFoundError:
                continue
            return IdleGroup(path), str(path)
    except OSError as error:
        return None, f"{error.filename or 'cgroup'}: {error.strerror or error}"
    return None, f"{path} was removed as it was made, {_ATTEMPTS} times"
