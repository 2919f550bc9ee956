"""Label files, video lists, folder and tar sources, dataset annotation converters."""

from __future__ import annotations

import gzip
import hashlib
import io
import multiprocessing
import os
import pickle
import tarfile
import warnings
from pathlib import Path

import pytest

from claver.data import sources as sources_mod
from claver.data.annotations import (
    AnnotationError,
    VideoEntry,
    convert_folder_tree,
    convert_hmdb51,
    convert_kinetics,
    convert_ucf101,
    read_labels,
    read_video_list,
    write_labels,
    write_video_list,
)
from claver.data.sources import (
    ArchiveError,
    FolderSource,
    RangeFile,
    TarSource,
    VideoSource,
)


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def assert_names(err: pytest.ExceptionInfo, path: Path, line: int, value: str) -> None:
    message = str(err.value)
    assert str(path) in message, message
    assert f"line {line}" in message, message
    assert value in message, message
    assert "Fix:" in message, message


# --------------------------------------------------------------------------- label files


def test_read_labels_quotes_commas_bom_crlf(tmp_path):
    text = 'id,name\r\n1,"pushing car, slowly"\r\n0,abseiling\r\n\r\n2,"say ""hi"""\r\n'
    path = write_bytes(tmp_path / "labels.csv", b"\xef\xbb\xbf" + text.encode())
    assert read_labels(path) == ["abseiling", "pushing car, slowly", 'say "hi"']


def test_read_labels_without_header_and_roundtrip(tmp_path):
    path = write_bytes(tmp_path / "l.csv", b"0, air drumming\n1,archery\n")
    assert read_labels(path) == ["air drumming", "archery"]
    names = ["a, b", 'quote "q"', "plain", "ünïcode"]
    out = write_labels(names, tmp_path / "sub" / "w.csv")
    assert lines(out)[0] == "id,name"
    assert read_labels(out) == names
    with pytest.raises(ValueError, match="unique"):
        write_labels(["a", "a"], tmp_path / "x.csv")


@pytest.mark.parametrize(
    ("body", "line", "value", "problem"),
    [
        ("id,name\n0,a\n1,b\n1,c\n", 4, "1", "already used on line 3"),
        ("id,name\n0,a\n1,b\n2,a\n", 4, "'a'", "name already used on line 2"),
        ("0,a\n1,b\n3,c\n4,d\n", 3, "3", "missing 2"),
        ("0,a\nx,b\n", 2, "'x'", "not an integer"),
        ("0,a\n1, \n", 2, "''", "empty name"),
        ("0,a\n1,b,c\n", 2, "'1,b,c'", "quote names"),
        ("0,a\n-1,b\n", 2, "-1", "negative"),
    ],
)
def test_read_labels_errors_name_file_line_value(tmp_path, body, line, value, problem):
    path = write_bytes(tmp_path / "labels.csv", body.encode())
    with pytest.raises(AnnotationError) as err:
        read_labels(path)
    assert_names(err, path, line, value)
    assert problem in str(err.value)
    assert isinstance(err.value, ValueError) and err.value.line == line


def test_read_labels_empty_file(tmp_path):
    path = write_bytes(tmp_path / "labels.csv", b"id,name\n")
    with pytest.raises(AnnotationError, match="no classes"):
        read_labels(path)


# --------------------------------------------------------------------------- video lists


def test_read_plain_list_spaces_tabs_multilabel_comments(tmp_path):
    text = (
        "# comment\n"
        "a/v1.mp4 3\r\n"
        "\n"
        "my videos/clip one.mp4 7\n"
        "b/v2.mp4\t4\n"
        "c/take 2\t5\n"
        "  d/v3.mp4 3 7 12  \n"
        "e/v4.mp4\t1 2\n"
    )
    path = write_bytes(tmp_path / "train.txt", b"\xef\xbb\xbf" + text.encode())
    assert read_video_list(path, num_classes=13) == [
        VideoEntry("a/v1.mp4", (3,), 2),
        VideoEntry("my videos/clip one.mp4", (7,), 4),
        VideoEntry("b/v2.mp4", (4,), 5),
        VideoEntry("c/take 2", (5,), 6),
        VideoEntry("d/v3.mp4", (3, 7, 12), 7),
        VideoEntry("e/v4.mp4", (1, 2), 8),
    ]
    rooted = read_video_list(path, root=tmp_path / "videos")
    assert rooted[0].path == os.path.join(tmp_path / "videos", "a/v1.mp4")
    assert rooted[0].label == 3
    with pytest.raises(ValueError, match="multi-label"):
        _ = rooted[4].label


def test_read_csv_list(tmp_path):
    text = (
        "path,label\n"
        "a/v1.mp4,3\n"
        '"b/with, comma.mp4","3,7"\n'
        "# skipped,1\n"
        "c/v2.mp4,1,2\n"
        'd/v3.mp4,"4 5"\n'
    )
    path = write_bytes(tmp_path / "list.csv", text.encode())
    assert read_video_list(path) == [
        VideoEntry("a/v1.mp4", (3,), 2),
        VideoEntry("b/with, comma.mp4", (3, 7), 3),
        VideoEntry("c/v2.mp4", (1, 2), 5),
        VideoEntry("d/v3.mp4", (4, 5), 6),
    ]


@pytest.mark.parametrize(
    ("name", "body", "line", "value", "problem"),
    [
        ("l.txt", "a.mp4 1\nb.mp4 400\n", 2, "400", "the label file has 400 classes"),
        ("l.txt", "a.mp4 1\n\n# x\nb.mp4\n", 4, "'b.mp4'", "trailing integers"),
        ("l.txt", "a.mp4 -1\n", 1, "-1", "outside"),
        ("l.txt", "a.mp4 2 2\n", 1, "2", "repeated"),
        ("l.txt", "a.mp4\tx\n", 1, "'x'", "not an integer"),
        ("l.csv", "path,label\na.mp4,1\nb.mp4,\n", 3, "'b.mp4,'", "path,LABEL"),
        ("l.csv", "a.mp4,1\nb.mp4,\"1,400\"\n", 2, "400", "400 classes"),
    ],
)
def test_read_list_errors_name_file_line_value(tmp_path, name, body, line, value, problem):
    path = write_bytes(tmp_path / name, body.encode())
    with pytest.raises(AnnotationError) as err:
        read_video_list(path, num_classes=400)
    assert_names(err, path, line, value)
    assert problem in str(err.value)


@pytest.mark.parametrize("name", ["out.txt", "out.csv"])
def test_write_video_list_roundtrip(tmp_path, name):
    entries = [
        VideoEntry("a/v1.mp4", (3,), 1),
        VideoEntry("my dir/take 2", (0, 5), 2),
        VideoEntry("b/with, comma.mp4", (1,), 3),
    ]
    out = write_video_list(entries, tmp_path / name)
    back = read_video_list(out)
    assert [(e.path, e.labels) for e in back] == [(e.path, e.labels) for e in entries]
    if name == "out.txt":
        assert lines(out) == ["a/v1.mp4 3", "my dir/take 2\t0 5", "b/with, comma.mp4\t1"]
    with pytest.raises(ValueError, match="comment"):
        write_video_list([VideoEntry("#x.mp4", (1,))], tmp_path / name)


# --------------------------------------------------------------------------- folder source


def test_folder_source_reports_missing(tmp_path):
    root = tmp_path / "videos"
    write_bytes(root / "a" / "v1.mp4", b"x")
    write_bytes(root / "b" / "v 2.mp4", b"y")
    listing = write_bytes(tmp_path / "train.txt", b"a/v1.mp4 0\na/gone.mp4 0\nb/v 2.mp4 1\n"
                          b"nodir/v.mp4 1\n")
    src = FolderSource(root, listing, num_classes=2)
    assert isinstance(src, VideoSource)
    assert len(src) == 4  # missing files are kept, not dropped
    assert src.open(0) == os.path.join(root, "a/v1.mp4")
    assert src.describe(2) == os.path.join(root, "b/v 2.mp4")
    assert [e.path for e in src.missing()] == ["a/gone.mp4", "nodir/v.mp4"]
    with pytest.raises(FileNotFoundError) as err:
        src.open(1)
    assert os.path.join(root, "a/gone.mp4") in str(err.value)
    assert "line 2" in str(err.value)
    write_bytes(root / "a" / "gone.mp4", b"late")
    assert len(src.missing()) == 2  # cached: one pass only
    assert src.open(1).endswith("gone.mp4")


# --------------------------------------------------------------------------- tar source


def make_tar(path: Path, members: dict[str, bytes], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def tar_members() -> dict[str, bytes]:
    rng = __import__("random").Random(0)
    sizes = {"run/a.mp4": 5000, "run/b.mp4": 1, "jump/c.mp4": 1024, "./jump/d.mp4": 0,
             "sit/e.webm": 70000, "README.txt": 10}
    return {name: rng.randbytes(size) for name, size in sizes.items()}


def test_range_file_reads_exactly_the_member(tmp_path, tar_members):
    tar = make_tar(tmp_path / "v.tar", tar_members)
    listing = write_bytes(tmp_path / "list.txt",
                          "".join(f"{n} {i}\n" for i, n in enumerate(tar_members)).encode())
    src = TarSource(tar, listing)
    assert isinstance(src, VideoSource) and src.missing() == []
    for i, data in enumerate(tar_members.values()):
        with src.open(i) as f:
            assert f.read() == data
            assert f.read() == b"" and f.read(10) == b""
    f = src.open(4)  # sit/e.webm, 70000 bytes
    data = tar_members["sit/e.webm"]
    assert src.describe(4) == f"{tar}:sit/e.webm"
    assert f.seekable() and f.readable() and not f.writable()
    assert f.read(100) == data[:100] and f.tell() == 100
    assert f.seek(-50, io.SEEK_CUR) == 50 and f.read(10) == data[50:60]
    assert f.seek(-10, io.SEEK_END) == 69990 and f.read(100) == data[-10:]
    assert f.tell() == 70000 and f.read(1) == b""
    assert f.seek(80000) == 80000 and f.read() == b""
    f.seek(123)
    buf = bytearray(1000)
    assert f.readinto(buf) == 1000 and bytes(buf) == data[123:1123]
    with pytest.raises(ValueError, match="negative"):
        f.seek(-1)
    assert io.BufferedReader(src.open(4), buffer_size=4096).read() == data
    f.close()
    with pytest.raises(ValueError, match="closed"):
        f.read()
    # A RangeFile over a plain path owns its descriptor.
    offset, size = src.members["run/a.mp4"]
    with RangeFile(tar, offset, size) as g:
        g.seek(4990)
        assert g.read() == tar_members["run/a.mp4"][4990:]


def test_tar_index_cached_and_rebuilt(tmp_path, tar_members, monkeypatch):
    tar = make_tar(tmp_path / "v.tar", tar_members)
    first = TarSource(tar)
    index = Path(str(tar) + ".index.json")
    assert index.is_file()
    calls = []
    real_build = sources_mod._build_tar_index
    monkeypatch.setattr(sources_mod, "_build_tar_index",
                        lambda p: calls.append(p) or real_build(p))
    second = TarSource(tar)
    assert calls == [] and second.members == first.members
    make_tar(tar, {"new/z.mp4": b"new bytes"}, mode="a")  # size and mtime change
    third = TarSource(tar)
    assert calls == [str(tar)]
    j = [e.path for e in third.entries].index("new/z.mp4")
    assert third.open(j).read() == b"new bytes"
    custom = tmp_path / "idx" / "my.json"
    custom.parent.mkdir()
    TarSource(tar, index_path=custom)
    assert custom.is_file()
    with pytest.warns(UserWarning, match="could not cache"):
        TarSource(tar, index_path=tmp_path / "no" / "such" / "dir.json")


def test_tar_folder_per_class_inference(tmp_path, tar_members):
    src = TarSource(make_tar(tmp_path / "v.tar", tar_members))
    assert src.classes == ["jump", "run", "sit"]
    assert [(e.path, e.labels) for e in src.entries] == [
        ("jump/c.mp4", (0,)), ("jump/d.mp4", (0,)), ("run/a.mp4", (1,)), ("run/b.mp4", (1,)),
        ("sit/e.webm", (2,)),
    ]
    assert src.open(1).read() == b""
    with pytest.raises(ArchiveError, match="3 class folders but num_classes is 4"):
        TarSource(tmp_path / "v.tar", num_classes=4)
    flat = make_tar(tmp_path / "flat.tar", {"top.mp4": b"x"})
    with pytest.raises(ArchiveError, match="top.mp4 is not inside a class folder"):
        TarSource(flat)


def test_tar_missing_member(tmp_path, tar_members):
    tar = make_tar(tmp_path / "v.tar", tar_members)
    listing = write_bytes(tmp_path / "l.txt", b"run/a.mp4 0\nrun/nope.mp4 1\n")
    src = TarSource(tar, listing, num_classes=2)
    assert [e.path for e in src.missing()] == ["run/nope.mp4"]
    with pytest.raises(FileNotFoundError) as err:
        src.open(1)
    message = str(err.value)
    assert f"{tar}:run/nope.mp4" in message and "l.txt, line 2" in message


def test_tar_compressed_refused(tmp_path, tar_members):
    raw = make_tar(tmp_path / "v.tar", tar_members).read_bytes()
    gz = write_bytes(tmp_path / "v.tar.gz", gzip.compress(raw))
    with pytest.raises(ArchiveError) as err:
        TarSource(gz)
    message = str(err.value)
    assert "uncompressed tar" in message and f"gzip -dc {gz} > {tmp_path / 'v.tar'}" in message
    with pytest.raises(ArchiveError, match="not a readable tar"):
        TarSource(write_bytes(tmp_path / "junk.tar", b"not a tar at all" * 100))


def test_tar_truncated_and_links(tmp_path, tar_members):
    tar = tmp_path / "v.tar"
    with tarfile.open(tar, "w") as tf:
        for name, data in list(tar_members.items())[:3]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("run/link.mp4")
        link.type, link.linkname = tarfile.SYMTYPE, "a.mp4"
        tf.addfile(link)
    linked = TarSource(tar, write_bytes(tmp_path / "l.txt", b"run/link.mp4 0\n"))
    assert linked.open(0).read() == tar_members["run/a.mp4"]
    cut = write_bytes(tmp_path / "cut.tar", tar.read_bytes()[:2000])
    with pytest.warns(UserWarning, match="damaged or truncated"):
        src = TarSource(cut, write_bytes(tmp_path / "c.txt", b"run/a.mp4 0\nrun/b.mp4 0\n"))
    assert [e.path for e in src.missing()] == ["run/a.mp4", "run/b.mp4"]
    with pytest.raises(ArchiveError, match=r"cut.tar:run/a.mp4: unreadable member .*truncated"):
        src.open(0)
    with pytest.raises(FileNotFoundError, match="damaged or truncated"):
        src.open(1)


def _read_in_child(src: TarSource, indices: list[int], queue) -> None:
    inherited = src._file._pid  # the parent's handle, copied by fork
    digests = [hashlib.sha256(src.open(i).read()).hexdigest() for i in indices]
    queue.put((indices, os.getpid(), inherited, src._file._pid, digests))


def test_tar_source_in_forked_processes(tmp_path, tar_members):
    tar = make_tar(tmp_path / "v.tar", tar_members)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        src = TarSource(tar)
    expected = [hashlib.sha256(src.open(i).read()).hexdigest() for i in range(len(src))]
    parent_fd = src._file.fileno()  # opened before the fork: children must not share it
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    jobs = [[4, 0, 2], [1, 3, 4, 2]]
    children = [ctx.Process(target=_read_in_child, args=(src, job, queue)) for job in jobs]
    for child in children:
        child.start()
    results = sorted((queue.get(timeout=30) for _ in jobs), key=lambda r: len(r[0]))
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    for indices, child_pid, inherited, handle_pid, digests in results:
        assert inherited == os.getpid() and child_pid != os.getpid()
        assert handle_pid == child_pid  # each child opened its own descriptor
        assert digests == [expected[i] for i in indices]
    assert src._file.fileno() == parent_fd and src.open(0).read() == tar_members["jump/c.mp4"]
    clone = pickle.loads(pickle.dumps(src))  # spawn-style workers get a fresh, unopened handle
    assert clone._file._fd is None and clone.open(4).read() == tar_members["sit/e.webm"]


# --------------------------------------------------------------------------- converters


def test_convert_kinetics(tmp_path):
    train = write_bytes(tmp_path / "train.csv", (
        b"label,youtube_id,time_start,time_end,split,is_cc\n"
        b"zumba,abc,14,24,train,0\n"
        b'"passing American football (in game)",x-Y_z,0,10,train,0\n'
        b"air drumming,q1,120,130,train,1\n"
    ))
    val = write_bytes(tmp_path / "validate.csv", (
        b"label,youtube_id,time_start,time_end,split\r\n"
        b"air drumming,v1,3,13,val\r\n"
        b"zumba,v2,0.0,10,validate\r\n"
    ))
    result = convert_kinetics([train, val], tmp_path / "out")
    assert result.num_classes == 3 and result.missing == []
    assert lines(result.labels) == [
        "id,name", "0,air drumming", "1,passing American football (in game)", "2,zumba"]
    assert lines(result.lists["train"]) == [
        "abc_000014_000024.mp4 2", "x-Y_z_000000_000010.mp4 1", "q1_000120_000130.mp4 0"]
    assert lines(result.lists["val"]) == ["v1_000003_000013.mp4 0", "v2_000000_000010.mp4 2"]

    root = tmp_path / "videos"
    write_bytes(root / "zumba" / "abc_000014_000024.mkv", b"x")
    write_bytes(root / "air drumming" / "v1_000003_000013.mkv", b"x")
    sub = convert_kinetics([train, val], tmp_path / "sub", video_root=root, ext=".mkv",
                           class_subdir=True)
    assert lines(sub.lists["train"]) == ["zumba/abc_000014_000024.mkv 2"]
    assert lines(sub.lists["val"]) == ["air drumming/v1_000003_000013.mkv\t0"]
    assert sub.missing == [
        "air drumming/q1_000120_000130.mkv",
        "passing American football (in game)/x-Y_z_000000_000010.mkv",
        "zumba/v2_000000_000010.mkv",
    ]
    kept = convert_kinetics(train, tmp_path / "kept", video_root=root, ext=".mkv",
                            class_subdir=True, keep_missing=True)
    assert len(lines(kept.lists["train"])) == 3 and len(kept.missing) == 2
    assert FolderSource(root, kept.lists["train"]).missing() != []

    bad = write_bytes(tmp_path / "bad.csv",
                      b"label,youtube_id,time_start,time_end,split\nzumba,a,1.5,10,train\n")
    with pytest.raises(AnnotationError) as err:
        convert_kinetics(bad, tmp_path / "x")
    assert_names(err, bad, 2, "'1.5'")
    nolabel = write_bytes(tmp_path / "test.csv", b"youtube_id,time_start,time_end,split\n")
    with pytest.raises(AnnotationError, match="lacks columns \\['label'\\]"):
        convert_kinetics(nolabel, tmp_path / "x")


def test_convert_ucf101(tmp_path):
    class_ind = write_bytes(tmp_path / "classInd.txt",
                            b"1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n3 YoYo\r\n")
    train = write_bytes(tmp_path / "trainlist01.txt", (
        b"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n"
        b"HandstandPushups/v_HandStandPushups_g08_c01.avi 2\r\n"
        b"YoYo/v_YoYo_g08_c01.avi 3\r\n"
    ))
    test = write_bytes(tmp_path / "testlist01.txt", (
        b"YoYo/v_YoYo_g01_c01.avi\r\n"
        b"handstandpushups/v_HandStandPushups_g01_c01.avi\r\n"
        b"ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi \r\n"
    ))
    result = convert_ucf101(class_ind, train, test, tmp_path / "out")
    assert lines(result.labels) == ["id,name", "0,ApplyEyeMakeup", "1,HandstandPushups", "2,YoYo"]
    assert lines(result.lists["train"]) == [
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 0",
        "HandstandPushups/v_HandStandPushups_g08_c01.avi 1",
        "YoYo/v_YoYo_g08_c01.avi 2",
    ]
    assert lines(result.lists["val"]) == [
        "YoYo/v_YoYo_g01_c01.avi 2",
        "handstandpushups/v_HandStandPushups_g01_c01.avi 1",
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 0",
    ]
    mp4 = convert_ucf101(class_ind, None, test, tmp_path / "mp4", ext=".mp4")
    assert list(mp4.lists) == ["val"]
    assert lines(mp4.lists["val"])[0] == "YoYo/v_YoYo_g01_c01.mp4 2"

    wrong = write_bytes(tmp_path / "trainlist02.txt", b"YoYo/v_YoYo_g08_c01.avi 3\n"
                        b"YoYo/v_YoYo_g09_c01.avi 1\n")
    with pytest.raises(AnnotationError) as err:
        convert_ucf101(class_ind, wrong, None, tmp_path / "x")
    assert_names(err, wrong, 2, "'YoYo'")
    unknown = write_bytes(tmp_path / "testlist02.txt", b"Nope/v.avi\n")
    with pytest.raises(AnnotationError) as err:
        convert_ucf101(class_ind, None, unknown, tmp_path / "x")
    assert_names(err, unknown, 1, "'Nope'")


def test_convert_hmdb51(tmp_path):
    splits = tmp_path / "testTrainMulti_7030_splits"
    write_bytes(splits / "brush_hair_test_split1.txt",
                b"April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 \n"
                b"Blonde_being_brushed_brush_hair_f_nm_np2_ri_med_0.avi 2 \n"
                b"unused_brush_hair.avi 0 \n")
    write_bytes(splits / "cartwheel_test_split1.txt",
                b"(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_med_0.avi 2\n"
                b"Acrobacias_cartwheel_f_cm_np1_ri_bad_0.avi 1\n")
    write_bytes(splits / "cartwheel_test_split2.txt", b"other.avi 1\n")
    result = convert_hmdb51(splits, tmp_path / "out")
    assert lines(result.labels) == ["id,name", "0,brush_hair", "1,cartwheel"]
    assert lines(result.lists["train"]) == [
        "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi 0",
        "cartwheel/Acrobacias_cartwheel_f_cm_np1_ri_bad_0.avi 1",
    ]
    assert lines(result.lists["val"]) == [
        "brush_hair/Blonde_being_brushed_brush_hair_f_nm_np2_ri_med_0.avi 0",
        "cartwheel/(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_med_0.avi 1",
    ]
    two = convert_hmdb51(sorted(splits.iterdir()), tmp_path / "two", split=2, ext="mp4")
    assert lines(two.lists["train"]) == ["cartwheel/other.mp4 0"]
    bad = write_bytes(tmp_path / "b" / "run_test_split1.txt", b"a.avi 1\nb.avi 3\n")
    with pytest.raises(AnnotationError) as err:
        convert_hmdb51(bad.parent, tmp_path / "x")
    assert_names(err, bad, 2, "'b.avi 3'")


def test_convert_folder_tree(tmp_path):
    root = tmp_path / "data"
    for cls, count in (("walk", 10), ("run", 4), ("sit", 1)):
        for k in range(count):
            write_bytes(root / cls / f"v{k:02d}.mp4", b"x")
    write_bytes(root / "run" / "notes.txt", b"x")
    write_bytes(root / "run" / "more" / "deep.MKV", b"x")
    write_bytes(root / ".hidden" / "v.mp4", b"x")
    write_bytes(root / "stray.mp4", b"x")
    plain = convert_folder_tree(root, tmp_path / "all")
    assert lines(plain.labels) == ["id,name", "0,run", "1,sit", "2,walk"]
    assert list(plain.lists) == ["train"]
    train = lines(plain.lists["train"])
    assert len(train) == 16 and train[:2] == ["run/more/deep.MKV 0", "run/v00.mp4 0"]
    a = convert_folder_tree(root, tmp_path / "a", val_fraction=0.5, seed=3)
    b = convert_folder_tree(root, tmp_path / "b", val_fraction=0.5, seed=3)
    c = convert_folder_tree(root, tmp_path / "c", val_fraction=0.5, seed=4)
    val_a = lines(a.lists["val"])
    assert val_a == lines(b.lists["val"]) and val_a != lines(c.lists["val"])
    per_class = [sum(line.endswith(f" {i}") for line in val_a) for i in range(3)]
    assert per_class == [2, 0, 5]  # round(0.5 * n) per class: run 5 -> 2, sit 1 -> 0
    assert sorted(val_a + lines(a.lists["train"])) == sorted(train)


def test_pyav_decodes_a_video_member(tmp_path):
    av = pytest.importorskip("av")
    np = pytest.importorskip("numpy")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for k in range(6):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * k, np.uint8), "rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    tar = make_tar(tmp_path / "v.tar", {"pad/x.bin": b"z" * 777, "cls/clip.mp4": buffer.getvalue()})
    src = TarSource(tar)
    with av.open(src.open(0)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 6 and abs(int(frames[5].mean()) - 200) <= 3
