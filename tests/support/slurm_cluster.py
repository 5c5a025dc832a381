#!/usr/bin/env python3
"""A real one-node SLURM cluster on this machine, for tests/workflow/test_slurm.py (and by hand).

As root: installs Debian's slurm-wlm, slurmdbd, munge and mariadb-server with apt-get (skipped
when they are there), writes every config under one state folder, and starts munged (unless one
already answers), MariaDB (a private datadir on a free port), slurmdbd, slurmctld and slurmd.
Accounting goes through slurmdbd so that `sacct` works: the SLURM executor plugin polls job
states with it, and the test reads each job's record from it. The node has this machine's memory,
twice its cores (see `Cluster.cpus`) and two fake GPUs (gres.conf with AutoDetect=off and two
harmless character devices, copies of /dev/null and /dev/zero), so that `--gpus=N` requests are
scheduled and accounted like on a GPU cluster. A TaskProlog can fail a rule's first job once
(see TASK_PROLOG) to test retries.

Clients find the cluster through SLURM_CONF (see `Cluster.env`), and /etc/slurm/slurm.conf is
made a link to it while it runs: the plugin's job step (snakemake-executor-plugin-slurm-jobstep)
drops SLURM_* variables, SLURM_CONF included, before its nested `srun`, which then reads the
default path. An /etc/slurm/slurm.conf that is not such a link is never touched (SetupError).
By hand:

    python tests/support/slurm_cluster.py up [STATE_DIR]     # prints the exports to use it
    python tests/support/slurm_cluster.py down [STATE_DIR]
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ["slurm-wlm", "slurmdbd", "munge", "mariadb-server"]
BINARIES = [
    "slurmctld",
    "slurmd",
    "slurmdbd",
    "munged",
    "mariadbd",
    "mariadb-install-db",
    "sbatch",
    "sacct",
]
CLUSTER = "leafpipe"
PARTITION = "leafpipe-test"
ACCOUNT = "leafpipe-test"
GPUS = 2
DEFAULT_STATE = Path("/tmp/leafpipe-slurm")
ETC_CONF = Path("/etc/slurm/slurm.conf")
MARK = "# One-node test cluster written by tests/support/slurm_cluster.py"

# Run by slurmstepd before each task, as the job's user. A file fail-once/RULE makes the first job
# of that rule fail: the task is started with a PYTHONHOME that does not exist, so the job's
# Python (snakemake) dies at once, as on a broken node. The file is renamed to RULE.done (holding
# the job id), so the retry runs normally.
TASK_PROLOG = """#!/bin/sh
dir="{state}/fail-once"
[ -d "$dir" ] || exit 0
comment=$(scontrol -o show job "$SLURM_JOB_ID" 2>/dev/null \\
    | sed -n 's/.* Comment=\\([^ ]*\\).*/\\1/p')
for marker in "$dir"/*; do
    rule=$(basename "$marker")
    case "$rule" in *.done) continue ;; esac
    case "$comment" in
        rule_"$rule"|rule_"$rule"_wildcards_*)
            if mv "$marker" "$marker.done" 2>/dev/null; then
                echo "$SLURM_JOB_ID" > "$marker.done"
                echo "export PYTHONHOME=/nonexistent/leafpipe-fail-once"
                echo "print leafpipe test TaskProlog: failing job $SLURM_JOB_ID ($comment) once"
            fi ;;
    esac
done
exit 0
"""


# The cluster's configuration files, formatted by `Cluster.configure`: {state} is its state folder.
SLURM_CONF = """\
{mark}
ClusterName={cluster}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ports[ctld]}
SlurmdPort={ports[slurmd]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/spool
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/log/slurmctld.log
SlurmdLogFile={state}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
TaskProlog={state}/etc/task_prolog.sh
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={ports[dbd]}
AccountingStorageTRES=gres/gpu
AccountingStorageEnforce=associations
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
MinJobAge=300
MailProg=/bin/true
ReturnToService=2
InactiveLimit=0
KillWait=5
SlurmdParameters=config_overrides
{node}
PartitionName={partition} Nodes=ALL Default=NO MaxTime=INFINITE State=UP
"""
SLURMDBD_CONF = """\
AuthType=auth/munge
DbdHost=localhost
DbdPort={ports[dbd]}
SlurmUser=root
LogFile={state}/log/slurmdbd.log
PidFile={state}/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={ports[mysql]}
StorageUser=slurm
StoragePass=leafpipe
StorageLoc=slurm_acct_db
"""


class SetupError(RuntimeError):
    """The cluster could not be installed or started (the test skips with this message)."""


def run(
    cmd: list[str], *, env: dict | None = None, check: bool = True, timeout: float = 120, **kwargs
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise SetupError(
            f"{' '.join(cmd)} exited {proc.returncode}: {(proc.stderr or proc.stdout)[-2000:]}"
        )
    return proc


def installed() -> bool:
    return all(shutil.which(b) or Path("/usr/sbin", b).exists() for b in BINARIES)


def install() -> float:
    """apt-get the packages unless every binary is there; returns the seconds it took."""
    start = time.monotonic()
    if installed():
        return 0.0
    if os.geteuid() != 0:
        raise SetupError("not root: cannot apt-get install slurm")
    if not shutil.which("apt-get"):
        raise SetupError("no apt-get on this machine")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], env=env, timeout=300)
    run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
        env=env,
        timeout=600,
    )
    if not installed():
        raise SetupError(f"apt-get installed {PACKAGES} but some of {BINARIES} are missing")
    return time.monotonic() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine_memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise SetupError("no MemTotal in /proc/meminfo")


def sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # a zombie of ours is dead too
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(what: str, check, timeout: float, logs: list[Path] = ()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    tails = "".join(f"\n--- {p}:\n{p.read_text()[-1500:]}" for p in logs if p.exists())
    raise SetupError(f"timed out after {timeout:.0f} s waiting for {what}{tails}")


@dataclass
class Cluster:
    state: Path = DEFAULT_STATE
    host: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    # twice the cores (slurmd accepts it with SlurmdParameters=config_overrides): the test's jobs
    # spend much of their time starting Python and waiting, so two per core keep the cores busy
    cpus: int = field(default_factory=lambda: 2 * (os.cpu_count() or 1))

    @property
    def conf(self) -> Path:
        return self.state / "etc" / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """What a client (sbatch, sacct, snakemake) needs to reach this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    @property
    def pids(self) -> Path:
        return self.state / "pids.json"

    # -- configuration -------------------------------------------------------------------------

    def configure(self) -> None:
        s = self.state
        for sub in ("etc", "log", "ctld", "spool", "dev", "mysql", "fail-once"):
            (s / sub).mkdir(parents=True, exist_ok=True)
        ports = {name: free_port() for name in ("ctld", "slurmd", "dbd", "mysql")}
        self.ports = ports
        for k, minor in zip(range(GPUS), (3, 5, 7, 8)):  # null, zero, full, random: harmless
            dev = s / "dev" / f"gpu{k}"
            if not dev.exists():
                os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
        memory = machine_memory_mb() - 1024
        node = (
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={memory} "
            f"Gres=gpu:{GPUS} State=UNKNOWN"
        )
        values = {"state": s, "ports": ports, "host": self.host, "node": node}
        (s / "etc" / "slurm.conf").write_text(
            SLURM_CONF.format(mark=MARK, cluster=CLUSTER, partition=PARTITION, **values)
        )
        (s / "etc" / "gres.conf").write_text(
            f"AutoDetect=off\nNodeName={self.host} Name=gpu File={s}/dev/gpu[0-{GPUS - 1}]\n"
        )
        dbd = s / "etc" / "slurmdbd.conf"
        dbd.write_text(SLURMDBD_CONF.format(**values))
        dbd.chmod(0o600)
        prolog = s / "etc" / "task_prolog.sh"
        prolog.write_text(TASK_PROLOG.format(state=s))
        prolog.chmod(0o755)

    # -- daemons -------------------------------------------------------------------------------

    def _record(self, name: str, pid: int) -> None:
        pids = json.loads(self.pids.read_text()) if self.pids.exists() else {}
        pids[name] = pid
        self.pids.write_text(json.dumps(pids))

    def _pidfile(self, name: str, path: Path, timeout: float = 30) -> None:
        wait_for(
            f"{name} to write {path}",
            lambda: path.exists() and path.read_text().strip(),
            timeout,
            [self.state / "log" / f"{name}.log"],
        )
        self._record(name, int(path.read_text().split()[0]))

    def _munge(self) -> None:
        if run(["sh", "-c", "munge -n | unmunge"], check=False).returncode == 0:
            return  # a munged answers already (not ours: left running)
        for d in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
            Path(d).mkdir(parents=True, exist_ok=True)
            shutil.chown(d, "munge", "munge")
        if not Path("/etc/munge/munge.key").exists():
            run(["runuser", "-u", "munge", "--", sbin("mungekey"), "--create"])
        run(["runuser", "-u", "munge", "--", sbin("munged")])
        self._pidfile("munged", Path("/run/munge/munged.pid"))
        wait_for(
            "munged",
            lambda: run(["sh", "-c", "munge -n | unmunge"], check=False).returncode == 0,
            20,
        )

    def _mysql(self) -> None:
        s, port = self.state, self.ports["mysql"]
        sock = s / "mysql.sock"
        if not (s / "mysql" / "mysql").exists():
            run(
                [
                    sbin("mariadb-install-db"),
                    "--no-defaults",
                    f"--datadir={s}/mysql",
                    "--user=root",
                    "--auth-root-authentication-method=socket",
                    "--skip-test-db",
                ],
                timeout=120,
            )
        log = open(s / "log" / "mariadb.log", "a")
        proc = subprocess.Popen(
            [
                sbin("mariadbd"),
                "--no-defaults",
                f"--datadir={s}/mysql",
                f"--socket={sock}",
                f"--port={port}",
                "--bind-address=127.0.0.1",
                "--user=root",
                f"--pid-file={s}/mariadb.pid",
                "--innodb-buffer-pool-size=256M",
                "--innodb-lock-wait-timeout=900",
                "--innodb-log-file-size=64M",
                "--skip-name-resolve",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._record("mariadbd", proc.pid)
        client = [shutil.which("mariadb") or "mysql", "--no-defaults", f"--socket={sock}", "-uroot"]
        wait_for(
            "mariadbd",
            lambda: run([*client, "-e", "select 1"], check=False).returncode == 0,
            60,
            [s / "log" / "mariadb.log"],
        )
        run(
            [
                *client,
                "-e",
                "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'leafpipe';"
                "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'leafpipe';"
                "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
                "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';",
            ]
        )

    def _link_etc_conf(self) -> None:
        if ETC_CONF.is_symlink() or ETC_CONF.exists():
            try:
                ours = ETC_CONF.is_symlink() and ETC_CONF.read_text().startswith(MARK)
            except OSError:  # a dangling link, left by a cluster of ours that is gone
                ours = ETC_CONF.is_symlink() and "leafpipe" in os.readlink(ETC_CONF)
            if not ours:
                raise SetupError(
                    f"{ETC_CONF} exists and is not this test's: "
                    "not touching a real cluster's config"
                )
            other = Path(os.readlink(ETC_CONF)).parent.parent / "pids.json"
            if other != self.pids and other.exists():
                pid = json.loads(other.read_text()).get("slurmctld")
                if isinstance(pid, int) and alive(pid):
                    raise SetupError(
                        f"another test cluster is running ({other.parent}): stop it first"
                    )
            ETC_CONF.unlink()
        ETC_CONF.parent.mkdir(parents=True, exist_ok=True)
        ETC_CONF.symlink_to(self.conf)
        self._record("etc_link", str(self.conf))

    def start(self) -> None:
        if os.geteuid() != 0:
            raise SetupError("not root: cannot start slurm daemons")
        self.configure()
        self._link_etc_conf()
        env, s = self.env, self.state
        self._munge()
        self._mysql()
        run([sbin("slurmdbd")], env=env)
        self._pidfile("slurmdbd", s / "slurmdbd.pid")
        wait_for(
            "slurmdbd",
            lambda: (
                run(["sacctmgr", "-n", "list", "cluster"], env=env, check=False).returncode == 0
            ),
            60,
            [s / "log" / "slurmdbd.log"],
        )
        for args in (
            ["add", "cluster", CLUSTER],
            ["add", "account", ACCOUNT, f"cluster={CLUSTER}"],
            ["add", "user", "root", f"account={ACCOUNT}", f"cluster={CLUSTER}"],
        ):
            proc = run(["sacctmgr", "-i", *args], env=env, check=False)
            if proc.returncode != 0 and "Nothing new added" not in proc.stdout + proc.stderr:
                raise SetupError(f"sacctmgr {' '.join(args)}: {proc.stdout}{proc.stderr}")
        run([sbin("slurmctld"), "-i"], env=env)
        self._pidfile("slurmctld", s / "slurmctld.pid")
        run([sbin("slurmd")], env=env)
        self._pidfile("slurmd", s / "slurmd.pid")
        logs = [s / "log" / "slurmctld.log", s / "log" / "slurmd.log"]
        wait_for(
            "the node to be idle",
            lambda: run(["sinfo", "-h", "-o", "%t"], env=env, check=False).stdout.strip() == "idle",
            60,
            logs,
        )

    def stop(self) -> None:
        """Stop the daemons this module started (by the pids it recorded), newest first."""
        if not self.pids.exists():
            return
        pids = json.loads(self.pids.read_text())
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            pid = pids.get(name)
            if pid is None or not isinstance(pid, int) or not alive(pid):
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if ETC_CONF.is_symlink() and os.readlink(ETC_CONF) == pids.get("etc_link"):
            ETC_CONF.unlink()
        self.pids.unlink()

    # -- queries -------------------------------------------------------------------------------

    def sacct(
        self,
        name: str,
        fields: str = (
            "JobIDRaw,JobName,Comment,State,ExitCode,Partition,Account,AllocTRES,Start,End"
        ),
    ) -> list[dict[str, str]]:
        """One row per job (allocations only, no steps) whose job name is `name` (the plugin's
        run id)."""
        proc = run(
            [
                "sacct",
                "-X",
                "-P",
                "-n",
                "-a",
                "--starttime",
                "now-1days",
                "--name",
                name,
                "--format",
                fields,
            ],
            env=self.env,
        )
        keys = fields.split(",")
        return [dict(zip(keys, line.split("|"))) for line in proc.stdout.splitlines() if line]


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in ("up", "down"):
        print(__doc__)
        return 2
    cluster = Cluster(Path(argv[2]) if len(argv) > 2 else DEFAULT_STATE)
    if argv[1] == "up":
        took = install()
        cluster.start()
        print(f"# slurm is up (apt-get: {took:.0f} s). To use it:")
        print(
            f"export SLURM_CONF={cluster.conf} LEAFPIPE_SLURM_PARTITION={PARTITION} "
            f"LEAFPIPE_SLURM_ACCOUNT={ACCOUNT}"
        )
    else:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
