"""``ocppgw.auth.idle_group``: where the hashing processes' idle CPU group is made, on fake ``/proc``
and cgroup trees (v1, v2, and the cases that leave none), then on this machine's own cgroups."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from ocppgw.auth.idle_group import GROUP_NAME, IdleGroup, make_idle_group

V1_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / {root}/cpu rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / {root}/memory rw,relatime - cgroup cgroup rw,memory
"""
V2_MOUNTS = "30 23 0:27 / {root}/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


class FakeTreeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.proc = self.root / "proc"
        self.proc.mkdir(parents=True)

    def tree(self, mounts: str, cgroup: str) -> None:
        (self.proc / "mountinfo").write_text(mounts.format(root=self.root))
        (self.proc / "cgroup").write_text(cgroup)

    def kernel_makes(self, group: Path) -> None:
        """What the kernel does on mkdir in a cgroup hierarchy: the control files are there."""
        group.mkdir(parents=True)
        (group / "cpu.idle").write_text("0\n")
        (group / "cgroup.procs").write_text("")

    def test_v1_under_own_group(self) -> None:
        """cgroup v1: the group goes under the gateway's own in the cpu hierarchy, cpu.idle set to 1;
        joining writes the pid to its cgroup.procs, and an empty group is removed."""
        self.tree(V1_MOUNTS, "4:memory:/m\n3:cpu,cpuacct:/svc/gw\n1:name=systemd:/svc\n")
        expected = self.root / "cpu" / "svc" / "gw" / GROUP_NAME
        self.kernel_makes(expected)
        group, where = make_idle_group(self.proc)
        assert group is not None
        self.assertEqual((group.path, where), (expected, str(expected)))
        self.assertEqual((expected / "cpu.idle").read_text(), "1\n")
        group.join(4321)
        self.assertEqual((expected / "cgroup.procs").read_text(), "4321\n")
        (expected / "cpu.idle").unlink()
        (expected / "cgroup.procs").unlink()
        group.remove()
        self.assertFalse(expected.exists())

    def test_join_makes_a_removed_group_again(self) -> None:
        """Another gateway's stop removed the shared group after this one made it: joining makes it
        again, at idle priority, instead of leaving the process at nice 10."""
        self.tree(V1_MOUNTS, "3:cpu,cpuacct:/gw\n")
        expected = self.root / "cpu" / "gw" / GROUP_NAME
        self.kernel_makes(expected)
        group, _where = make_idle_group(self.proc)
        assert group is not None
        for control in expected.iterdir():
            control.unlink()
        expected.rmdir()
        group.join(4321)
        self.assertEqual((expected / "cpu.idle").read_text(), "1\n")
        self.assertEqual((expected / "cgroup.procs").read_text(), "4321\n")

    def test_removed_while_made(self) -> None:
        """Another gateway's stop removes the shared group between its mkdir and cpu.idle: it is made
        again (three tries), not given up for nice 10."""
        self.tree(V1_MOUNTS, "3:cpu,cpuacct:/gw\n")
        expected = self.root / "cpu" / "gw" / GROUP_NAME
        expected.parent.mkdir(parents=True)
        mkdir, write_text = Path.mkdir, Path.write_text
        races = [2]  # how many more writes of cpu.idle find the group just removed

        def kernel_mkdir(path: Path, *args: Any, **kwargs: Any) -> None:
            mkdir(path, *args, **kwargs)
            if path == expected and not (path / "cpu.idle").exists():
                write_text(path / "cpu.idle", "0\n")

        def racing_write(path: Path, text: str, *args: Any, **kwargs: Any) -> int:
            if path == expected / "cpu.idle" and races[0] > 0:
                races[0] -= 1
                path.unlink()
                expected.rmdir()
            return write_text(path, text, *args, **kwargs)

        self.patch(Path, "mkdir", kernel_mkdir)
        self.patch(Path, "write_text", racing_write)
        group, where = make_idle_group(self.proc)
        self.assertEqual((group and group.path, where), (expected, str(expected)))
        self.assertEqual(((expected / "cpu.idle").read_text(), races), ("1\n", [0]))
        races[0] = 3  # every try loses the race: given up, with the reason
        group, why = make_idle_group(self.proc)
        self.assertIsNone(group)
        self.assertIn("was removed as it was made, 3 times", why)

    def test_v2_beside_own_group(self) -> None:
        """cgroup v2: beside the gateway's group, once the parent hands cpu down (here it already does)."""
        self.tree(V2_MOUNTS, "0::/system.slice/ocppgw.service/main\n")
        service = self.root / "unified" / "system.slice" / "ocppgw.service"
        (service / "main").mkdir(parents=True)
        (service / "cgroup.subtree_control").write_text("cpu memory\n")
        self.kernel_makes(service / GROUP_NAME)
        group, where = make_idle_group(self.proc)
        self.assertEqual(where, str(service / GROUP_NAME))
        self.assertIsNotNone(group)

    def test_v2_parent_that_does_not_delegate(self) -> None:
        """cgroup v2 without the cpu controller handed down (the write is not taken): no group, and the
        reason names the file and how systemd delegates."""
        self.tree(V2_MOUNTS, "0::/system.slice/ocppgw.service\n")
        slice_ = self.root / "unified" / "system.slice"
        (slice_ / "ocppgw.service").mkdir(parents=True)
        (slice_ / "cgroup.subtree_control").write_text("memory\n")
        os.chmod(slice_ / "cgroup.subtree_control", 0o444)
        group, why = make_idle_group(self.proc)
        self.assertIsNone(group)
        self.assertIn("cgroup.subtree_control", why)
        if os.geteuid() != 0:  # root writes past 0444: then the kernel's refusal is the read-back
            self.assertIn("Delegate=cpu", why)
        self.assertFalse((slice_ / GROUP_NAME).exists())

    def test_no_cpu_controller(self) -> None:
        self.tree(V1_MOUNTS, "4:memory:/m\n1:name=systemd:/\n")
        self.assertEqual(make_idle_group(self.proc), (None, "no cgroup holds the cpu controller"))

    def test_hierarchy_not_mounted(self) -> None:
        """A group path outside every mount of its hierarchy (another namespace's view)."""
        self.tree(V1_MOUNTS.replace(" / ", " /elsewhere ", 2), "3:cpu,cpuacct:/svc\n")
        group, why = make_idle_group(self.proc)
        self.assertIsNone(group)
        self.assertIn("not mounted here", why)

    def test_kernel_without_cpu_idle(self) -> None:
        """No cpu.idle in a new group (Linux before 5.15): the group is removed again."""
        self.tree(V1_MOUNTS, "3:cpu,cpuacct:/\n")
        (self.root / "cpu").mkdir()
        group, why = make_idle_group(self.proc)
        self.assertIsNone(group)
        self.assertIn("cpu.idle", why)
        self.assertFalse((self.root / "cpu" / GROUP_NAME).exists())

    def test_read_only_hierarchy(self) -> None:
        """A hierarchy the gateway may not write (a container's): no group, the error named."""
        self.tree(V1_MOUNTS, "3:cpu,cpuacct:/\n")
        (self.root / "cpu").write_text("")  # mkdir under a file fails, as under a read-only mount
        group, why = make_idle_group(self.proc)
        self.assertIsNone(group)
        self.assertIn(str(self.root / "cpu"), why)


class MachineTests(SynchronousTestCase):
    def test_this_machine(self) -> None:
        """These machines (root, cgroup v1 with a cpu hierarchy, Linux 6) give the hashing processes an
        idle group: a process joined to it runs there, and the kernel holds cpu.idle at 1. Where this
        fails, the gateway falls back to nice 10 alone: see the message for why."""
        group, where = make_idle_group()
        assert group is not None, f"no idle group on this machine: {where}"
        self.addCleanup(group.remove)  # last: once the child is gone
        self.assertEqual((group.path / "cpu.idle").read_text().strip(), "1")
        child = subprocess.Popen(["sleep", "30"])
        self.addCleanup(child.wait)
        self.addCleanup(child.kill)
        group.join(child.pid)
        self.assertIn(f"/{GROUP_NAME}\n", Path(f"/proc/{child.pid}/cgroup").read_text())

    def test_removed_group_made_again_on_join(self) -> None:
        """The real hierarchy: a group removed under this gateway (by another's stop) is made again when
        a process joins it, with cpu.idle 1. (A group of this test's own beside the shared one, so that
        other tests running meanwhile keep theirs.)"""
        shared, where = make_idle_group()
        assert shared is not None, f"no idle group on this machine: {where}"
        group = IdleGroup(shared.path.parent / f"{GROUP_NAME}-test-{os.getpid()}")
        self.assertFalse(group.path.exists())
        self.addCleanup(group.remove)
        child = subprocess.Popen(["sleep", "30"])
        self.addCleanup(child.wait)
        self.addCleanup(child.kill)
        group.join(child.pid)
        self.assertIn(f"/{group.path.name}\n", Path(f"/proc/{child.pid}/cgroup").read_text())
        self.assertEqual((group.path / "cpu.idle").read_text().strip(), "1")
