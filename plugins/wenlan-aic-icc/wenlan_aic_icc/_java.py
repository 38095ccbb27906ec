"""The two Java programs of the COCO caption protocol, driven from Python.

pycocoevalcap ships the Stanford PTB tokenizer (stanford-corenlp-3.4.1.jar)
and METEOR 1.5 (meteor-1.5.jar). These drivers run the same jars with the
same arguments as pycocoevalcap's own wrappers and post-process their output
the same way, so the numbers are the same; they differ only in plumbing:

* PTB: the temporary input file goes to the system temporary folder rather
  than into the installed package (which may be read-only), the output line
  count is checked instead of silently truncated by `zip`, and the five
  characters that the Java tokenizer (with ``-preserveLines``) treats as line
  ends besides ``\\n`` are turned into spaces first (pycocoevalcap only does
  that for ``\\n``; any of the others would shift every later caption onto
  the wrong image). They are whitespace inside a caption, so this changes
  nothing for captions that pycocoevalcap handles correctly.
* METEOR: one JVM for the whole set, started early so that loading its
  paraphrase table overlaps other work; all ``SCORE`` lines are written from
  a thread while the replies are read (pycocoevalcap waits for each reply
  before writing the next line), then one ``EVAL`` line aggregates the
  statistics exactly as pycocoevalcap does. stderr goes to a file, never to
  an unread pipe.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from wenlan_cli.plugin_api import WenlanError

__all__ = [
    "JavaError",
    "MeteorFailed",
    "MeteorProcess",
    "ScoringError",
    "find_java",
    "meteor_command",
    "ptb_command",
    "ptb_tokenize",
    "require_java",
]

_PYCOCOEVALCAP = Path(__import__("pycocoevalcap").__path__[0])
PTB_JAR = _PYCOCOEVALCAP / "tokenizer" / "stanford-corenlp-3.4.1.jar"
METEOR_DIR = _PYCOCOEVALCAP / "meteor"
METEOR_JAR = "meteor-1.5.jar"

# Tokens that pycocoevalcap's PTBTokenizer wrapper drops after tokenizing
# (note: "-LRB-" etc. never match, because -lowerCase writes "-lrb-").
PTB_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
# Every code point that ends a line for the PTB tokenizer with -preserveLines,
# found by running all of Unicode through the jar: \n \v \f \r U+2028 U+2029.
_LINE_ENDS = re.compile("[\n\x0b\x0c\r\u2028\u2029]")


class ScoringError(WenlanError):
    """Caption scoring could not run (exit code 1); the message says why."""


class JavaError(ScoringError):
    """Java is missing, or a Java step of the scoring protocol failed."""


class MeteorFailed(Exception):
    """The METEOR JVM could not start or stopped answering; the message is one line."""


def find_java() -> str | None:
    """The `java` executable on PATH, or None."""
    return shutil.which("java")


def require_java() -> str:
    """`find_java()`, or a JavaError explaining why scoring needs it."""
    java = find_java()
    if java is None:
        raise JavaError(
            "official AIC-ICC scoring needs Java 8 or newer on PATH ('java' was not found): "
            "pycocoevalcap's PTB tokenizer, which every metric reads, and METEOR are Java programs."
        )
    return java


def ptb_command(java: str, input_file: str) -> list[str]:
    """pycocoevalcap's tokenizer command line (with absolute paths)."""
    return [
        java, "-cp", str(PTB_JAR), "edu.stanford.nlp.process.PTBTokenizer",
        "-preserveLines", "-lowerCase", input_file,
    ]  # fmt: skip


def meteor_command(java: str) -> list[str]:
    """pycocoevalcap's METEOR command line; run it with cwd=METEOR_DIR."""
    return [java, "-jar", "-Xmx2G", METEOR_JAR, "-", "-", "-stdio", "-l", "en", "-norm"]


def _first_line(data: bytes, default: str) -> str:
    for line in data.decode("utf-8", "replace").splitlines():
        if line.strip():
            return line.strip()[:200]
    return default


def ptb_tokenize(java: str, sentences: Sequence[str]) -> list[str]:
    """Tokenize one caption per item as pycocoevalcap's PTBTokenizer does.

    Returns lower-cased, space-separated tokens with PTB_PUNCTUATION removed.
    """
    text = "\n".join(_LINE_ENDS.sub(" ", s) for s in sentences)
    handle = tempfile.NamedTemporaryFile("wb", prefix="wenlan-ptb-", suffix=".txt", delete=False)
    try:
        with handle:
            handle.write(text.encode("utf-8"))
        try:
            proc = subprocess.run(ptb_command(java, handle.name), capture_output=True, check=False)
        except OSError as exc:
            raise JavaError(f"could not run the PTB tokenizer with {java} ({exc.strerror or exc}).") from None
    finally:
        os.unlink(handle.name)
    if proc.returncode != 0:
        reason = _first_line(proc.stderr, f"exit status {proc.returncode}")
        raise JavaError(f"the PTB tokenizer (Java) failed: {reason}")
    lines = proc.stdout.decode("utf-8").split("\n")
    if len(lines) < len(sentences):
        raise JavaError(
            f"the PTB tokenizer returned {len(lines)} lines for {len(sentences)} captions; "
            "its output cannot be matched to the images."
        )
    out = []
    for line in lines[: len(sentences)]:
        out.append(" ".join(w for w in line.rstrip().split(" ") if w not in PTB_PUNCTUATION))
    return out


class MeteorProcess:
    """One METEOR 1.5 JVM, started at construction and scored once or more.

    Construction never raises for a JVM that fails to start: the failure
    shows up as MeteorFailed from `score`, which is where the caller decides
    to skip the metric.
    """

    def __init__(self, java: str, command: Sequence[str] | None = None):
        self._stderr = tempfile.TemporaryFile()
        self._lock = threading.Lock()
        self._start_error: str | None = None
        try:
            self._proc: subprocess.Popen | None = subprocess.Popen(
                list(command) if command is not None else meteor_command(java),
                cwd=METEOR_DIR,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
            )
        except OSError as exc:
            self._proc = None
            self._start_error = f"could not start Java ({exc.strerror or exc})"

    def _failure(self, what: str) -> MeteorFailed:
        reason = self._start_error
        if reason is None and self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self._stderr.seek(0)
            status = self._proc.returncode
            default = f"exit status {status}" if status is not None else "no answer"
            reason = _first_line(self._stderr.read(1 << 16), default)
        return MeteorFailed(f"{what}: {reason}")

    def score(self, gts: dict[str, list[str]], res: dict[str, list[str]]) -> tuple[float, list[float]]:
        """(corpus METEOR, per-image METEOR) for PTB-tokenized captions, in `gts` order.

        The lines written are those of pycocoevalcap's Meteor.compute_score.
        """
        with self._lock:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                raise self._failure("the METEOR JVM did not start")
            assert proc.stdin is not None and proc.stdout is not None
            keys = list(gts)
            lines = []
            for key in keys:
                (hypothesis,) = res[key]
                hypothesis = hypothesis.replace("|||", "").replace("  ", " ")
                lines.append(" ||| ".join(("SCORE", " ||| ".join(gts[key]), hypothesis)))
            payload = ("\n".join(lines) + "\n").encode("utf-8")

            write_error: list[BaseException] = []

            def write() -> None:
                try:
                    proc.stdin.write(payload)
                    proc.stdin.flush()
                except (BrokenPipeError, OSError) as exc:  # the JVM died; the reader sees EOF
                    write_error.append(exc)

            writer = threading.Thread(target=write, name="meteor-writer", daemon=True)
            writer.start()
            stats = []
            for _ in keys:
                line = proc.stdout.readline()
                if not line:
                    break
                stats.append(line.decode("utf-8").strip())
            writer.join()
            if len(stats) != len(keys) or write_error:
                raise self._failure("the METEOR JVM stopped")
            eval_line = "EVAL" + "".join(f" ||| {s}" for s in stats)
            try:
                proc.stdin.write(f"{eval_line}\n".encode("utf-8"))
                proc.stdin.flush()
            except OSError:
                raise self._failure("the METEOR JVM stopped") from None
            values = []
            for _ in range(len(keys) + 1):
                line = proc.stdout.readline()
                if not line:
                    raise self._failure("the METEOR JVM stopped")
                try:
                    values.append(float(line.strip()))
                except ValueError:
                    raise MeteorFailed(f"METEOR answered {_first_line(line, '')!r}, not a score") from None
            return values[-1], values[:-1]

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                try:
                    stream.close()  # type: ignore[union-attr]
                except OSError:
                    pass
            proc.kill()
            proc.wait()
        self._stderr.close()

    def __enter__(self) -> MeteorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
