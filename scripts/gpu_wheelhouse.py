"""Build the wheelhouse that the GPU check carries to a machine with no network.

    python scripts/gpu_wheelhouse.py [--out .gpu_wheels] [--limit-mb 64] [--check-only]

The GPU machines this project borrows have Python 3.12, torch, cupy, numpy and
transformers 5 but no spaCy, and nothing can be installed there from a registry.
This downloads the cp312 manylinux wheels of spaCy, thinc, spacy-transformers,
transformers < 4.53.3 (and the versions of tokenizers and huggingface-hub it
needs, older than the image's) and their dependencies that the image lacks,
strips the debug symbols from their compiled modules (spaCy's tokens/doc module:
7.2 MB -> 0.9 MB) and repacks them, builds this package's own wheel, and copies
the CoNLL training file the timings read (../shared/conll2003/eng.train), so that
the wheels, the working tree and the data fit in the 64 MiB that travel with a
device call (`carry: [".gpu_wheels"]`; scripts/gpu_check.sh installs them there). It prints
the sizes and exits non-zero when they do not fit. `--check-only` measures an
existing wheelhouse without downloading anything.
"""

import argparse
import base64
import csv
import hashlib
import io
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The versions pinned here (requirements.txt) that the GPU image does not have, or has too new.
WHEELS = [
    "spacy==3.8.18",
    "thinc==8.3.14",
    "blis==1.3.4",
    "cymem==2.0.16",
    "preshed==3.0.15",
    "murmurhash==1.0.16",
    "srsly==2.5.6",
    "wasabi==1.1.3",
    "catalogue==2.0.10",
    "confection==1.3.4",
    "weasel==1.0.1",
    "spacy-legacy==3.0.12",
    "spacy-loggers==1.0.5",
    "cloudpathlib==0.26.0",
    "smart-open==9.0.4",
    "spacy-transformers==1.4.0",
    "spacy-alignments==0.9.3",
    "transformers==4.53.2",
    "tokenizers==0.21.4",
    "huggingface-hub==0.36.2",
    "pydantic==2.13.4",
    "pydantic-core==2.46.4",
    "annotated-types==0.7.0",
    "typing-inspection==0.4.2",
    "pytorch-crf==0.7.2",
]
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]
# The CoNLL training file the timings read; it travels inside the wheelhouse folder.
CONLL_TRAIN = ROOT.parent / "shared" / "conll2003" / "eng.train"


def download(out: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.12",
        "--implementation",
        "cp",
        "-d",
        str(out),
    ]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run(cmd + WHEELS, check=True)


def _record_line(name: str, data: bytes) -> list:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [name, f"sha256={digest}", str(len(data))]


def strip_wheel(path: Path) -> int:
    """Strip the debug symbols of a wheel's shared objects and rewrite its RECORD; the bytes saved."""
    if not shutil.which("strip"):
        return 0
    before = path.stat().st_size
    with zipfile.ZipFile(path) as zf:
        entries = [(info, zf.read(info)) for info in zf.infolist()]
    if not any(info.filename.endswith(".so") for info, _ in entries):
        return 0
    out_entries, record_name = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for info, data in entries:
            if info.filename.endswith(".dist-info/RECORD"):
                record_name = info.filename
                continue
            if info.filename.endswith(".so"):
                so = Path(tmp) / "lib.so"
                so.write_bytes(data)
                subprocess.run(["strip", "--strip-debug", str(so)], check=True)
                data = so.read_bytes()
            out_entries.append((info, data))
    rows = [_record_line(info.filename, data) for info, data in out_entries]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows + [[record_name, "", ""]])
    tmp_path = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in out_entries:
            zf.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(record_name, buf.getvalue())
    tmp_path.replace(path)
    return before - path.stat().st_size


def tree_bytes() -> int:
    """What of the working tree travels with a device call: tracked files, and untracked ones git does not ignore."""
    cmd = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]
    files = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    return sum((ROOT / f).stat().st_size for f in set(files) if (ROOT / f).is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu_wheels")
    parser.add_argument("--limit-mb", type=float, default=64.0)
    parser.add_argument("--check-only", action="store_true")
    args = parser.parse_args()
    if not args.check_only:
        if args.out.exists():
            shutil.rmtree(args.out)
        args.out.mkdir(parents=True)
        download(args.out)
        saved = sum(strip_wheel(p) for p in sorted(args.out.glob("*.whl")))
        print(f"stripped debug symbols: {saved / 2**20:.1f} MiB saved")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "-q",
                "-w",
                str(args.out),
                str(ROOT),
            ],
            check=True,
        )
        if not CONLL_TRAIN.exists():
            print(f"missing data: {CONLL_TRAIN}", file=sys.stderr)
            return 1
        shutil.copy2(CONLL_TRAIN, args.out / "eng.train")
    wheels = sum(p.stat().st_size for p in args.out.glob("*.whl"))
    data = sum(p.stat().st_size for p in args.out.iterdir() if p.suffix != ".whl")
    tree = tree_bytes()
    total = wheels + data + tree
    print(
        f"wheels {wheels / 2**20:.1f} MiB ({len(list(args.out.glob('*.whl')))} files), tree {tree / 2**20:.1f} MiB, "
        f"data {data / 2**20:.1f} MiB: {total / 2**20:.1f} MiB of {args.limit_mb:.0f}"
    )
    if total > args.limit_mb * 2**20:
        print(f"too large: {total / 2**20:.1f} MiB > {args.limit_mb:.0f} MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
