"""Alignment readers (TextGrid, TIMIT, .lab), the TextGrid writer, and phone-set folding."""

from __future__ import annotations

from pathlib import Path

import pytest

from vqspeech.data import demo, espeak
from vqspeech.data.alignments import (Segment, read_alignment, read_lab, read_textgrid,
                                      read_timit, write_textgrid)
from vqspeech.data.phones import (FOLDING_FILE, PACKAGED_SETS, PHONE_CLASSES, PhoneFolding,
                                  guess_phone_set)
from vqspeech.errors import UserError


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def textgrid_text(duration: float, tiers: dict[str, list[tuple[float, float, str]]]) -> str:
    """A long-format TextGrid written by hand; ``tiers`` must tile [0, duration] (blanks as "")."""
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0",
             f"xmax = {duration}", "tiers? <exists>", f"size = {len(tiers)}", "item []:"]
    for number, (name, intervals) in enumerate(tiers.items(), start=1):
        lines += [f"    item [{number}]:", '        class = "IntervalTier"',
                  f'        name = "{name}"', "        xmin = 0", f"        xmax = {duration}",
                  f"        intervals: size = {len(intervals)}"]
        for i, (start, end, label) in enumerate(intervals, start=1):
            lines += [f"        intervals [{i}]:", f"            xmin = {start}",
                      f"            xmax = {end}", f'            text = "{label}"']
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# TextGrid


def test_write_textgrid_round_trip(tmp_path):
    words = [Segment(0.1, 0.5, "the"), Segment(0.5, 1.2, "cat")]
    phones = [Segment(0.1, 0.2, "dh"), (0.2, 0.5, "ah"), Segment(0.5, 0.5, "k"),  # zero length
              Segment(0.6, 0.9, "ae"), Segment(0.9, 1.4, "t")]                      # past the end
    path = tmp_path / "out" / "a.TextGrid"
    write_textgrid(path, {"words": words, "phones": phones}, duration=1.25)
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.TextGrid"]  # no temporary left
    text = path.read_text(encoding="utf-8")
    assert text.startswith('File type = "ooTextFile"') and "xmax = 1.25" in text
    assert text.index('name = "words"') < text.index('name = "phones"')
    assert read_textgrid(path, "words") == words
    assert read_textgrid(path) == [Segment(0.1, 0.2, "dh"), Segment(0.2, 0.5, "ah"),
                                   Segment(0.6, 0.9, "ae"), Segment(0.9, 1.25, "t")]
    # The gaps are blank intervals in the file, so the tier covers [0, duration].
    from praatio import textgrid
    grid = textgrid.openTextgrid(str(path), includeEmptyIntervals=True)
    entries = grid.getTier("phones").entries
    assert tuple(entries[0]) == (0.0, 0.1, "") and entries[-1].end == 1.25
    assert [e.label for e in entries] == ["", "dh", "ah", "", "ae", "t"]


def test_demo_textgrid_reads_back_as_synthesised(tmp_path):
    result = espeak.synthesize("The cat sat on the mat.", voice="en-us")
    path = tmp_path / "s.TextGrid"
    demo.write_textgrid(path, result)
    phones = read_alignment(path)
    assert [s.label for s in phones] == [label for _, _, label in result.phones]
    assert all(s.start == pytest.approx(a) and s.end == pytest.approx(min(b, result.duration))
               for s, (a, b, _) in zip(phones, result.phones))
    words = read_alignment(path, "words")
    assert [s.label for s in words] == [label for _, _, label in result.words]
    assert [s.label for s in words[:3]] == ["The", "cat", "sat"]


def test_mfa_textgrid_tiers_and_blank_intervals(tmp_path):
    path = write_text(tmp_path / "utt.TextGrid", textgrid_text(1.0, {
        "spk1 - words": [(0, 0.2, ""), (0.2, 0.6, "hello"), (0.6, 0.7, ""), (0.7, 1.0, "you")],
        "spk1 - phones": [(0, 0.2, ""), (0.2, 0.3, "HH"), (0.3, 0.4, "AH0"), (0.4, 0.5, "L"),
                          (0.5, 0.6, "OW1"), (0.6, 0.7, "   "), (0.7, 0.8, "Y"),
                          (0.8, 1.0, "UW1")],
    }))
    phones = read_textgrid(path)
    assert phones[0] == Segment(0.2, 0.3, "HH")
    assert [s.label for s in phones] == ["HH", "AH0", "L", "OW1", "Y", "UW1"]  # blanks left out
    assert read_textgrid(path, "words") == [Segment(0.2, 0.6, "hello"), Segment(0.7, 1.0, "you")]
    assert read_alignment(path, "phone") == phones   # "phone" also finds "... - phones"
    assert read_textgrid(path, "spk1 - words") == read_textgrid(path, "word")


def test_textgrid_tier_matching_rules(tmp_path):
    path = write_text(tmp_path / "x.textgrid", textgrid_text(1.0, {
        "Phone": [(0, 0.5, "a"), (0.5, 1.0, "b")],
        "words": [(0, 1.0, "ab")],
    }))
    assert [s.label for s in read_alignment(path, "phones")] == ["a", "b"]  # case and synonym
    assert [s.label for s in read_alignment(path, "PHONE")] == ["a", "b"]
    assert read_alignment(path, "words") == [Segment(0.0, 1.0, "ab")]
    with pytest.raises(UserError, match=r"x\.textgrid has no tier 'syllables' "
                                         r"\(its tiers: 'Phone', 'words'\)"):
        read_textgrid(path, "syllables")


def test_textgrid_two_mfa_speakers_is_ambiguous(tmp_path):
    path = write_text(tmp_path / "two.TextGrid", textgrid_text(1.0, {
        "anna - phones": [(0, 1.0, "a")], "bob - phones": [(0, 1.0, "b")]}))
    with pytest.raises(UserError, match="several tiers .*anna - phones, bob - phones"):
        read_textgrid(path)
    assert read_textgrid(path, "bob - phones") == [Segment(0.0, 1.0, "b")]


# ----------------------------------------------------------------------------------------------
# TIMIT


def test_timit_sample_times_and_siblings(tmp_path):
    phn = write_text(tmp_path / "SA1.PHN", "0 2400 h#\n2400 4160 sh\n4160 5723 ix\n")
    wrd = write_text(tmp_path / "SA1.WRD", "2400 5723 she\n5723 10337 had\n")
    expected = [Segment(0.0, 0.15, "h#"), Segment(0.15, 0.26, "sh"),
                Segment(0.26, 5723 / 16000, "ix")]
    assert read_timit(phn) == expected
    assert read_alignment(phn) == expected
    assert read_alignment(phn, "words") == [Segment(0.15, 5723 / 16000, "she"),
                                            Segment(5723 / 16000, 10337 / 16000, "had")]
    assert read_alignment(wrd, "phones") == expected   # .WRD -> sibling .PHN
    assert read_timit(phn, sample_rate=8000)[1] == Segment(0.3, 0.52, "sh")
    lower = write_text(tmp_path / "lower" / "sa1.phn", "0 1600 h#\n")
    write_text(tmp_path / "lower" / "sa1.wrd", "0 1600 she\n")
    assert read_alignment(lower, "words") == [Segment(0.0, 0.1, "she")]
    with pytest.raises(UserError, match=r"SA2\.WRD, which does not exist"):
        read_alignment(write_text(tmp_path / "SA2.PHN", "0 1 h#\n"), "words")


# ----------------------------------------------------------------------------------------------
# .lab


def test_festvox_lab(tmp_path):
    path = write_text(tmp_path / "arctic_a0001.lab", "separator ;\nnfields 1\n#\n"
                      "    0.11000 125 pau\n    0.25000 125 ao\n    0.30000 125\n"
                      "    0.42500 125 th\n")
    assert read_lab(path) == [Segment(0.0, 0.11, "pau"), Segment(0.11, 0.25, "ao"),
                              Segment(0.3, 0.425, "th")]   # the unlabelled 0.25-0.30 is left out
    assert read_alignment(path) == read_lab(path)


def test_hts_lab_mono_and_full_context(tmp_path):
    mono = write_text(tmp_path / "mono.lab", "0 2500000 sil\n2500000 3100000 dh\n"
                      "3100000 3500000 ax\n")
    assert read_lab(mono) == [Segment(0.0, 0.25, "sil"), Segment(0.25, 0.31, "dh"),
                              Segment(0.31, 0.35, "ax")]
    full = write_text(tmp_path / "full.LAB",
                      "0 2500000 x^x-pau+dh=ax@x_x/A:0_0_0/B:x-x-x@x-x&x-x#x-x$x-x!x-x;x-x|x\n"
                      "2500000 3100000 x^pau-dh+ax=k@1_2/A:0_0_0/B:0-0-2@1-1&1-6#1-3$1-2\n"
                      "3100000 3500000 pau^dh-ax+k=ae@2_1/A:0_0_0/B:0-0-2@1-1&1-6#1-3\n")
    assert read_alignment(full) == [Segment(0.0, 0.25, "pau"), Segment(0.25, 0.31, "dh"),
                                    Segment(0.31, 0.35, "ax")]
    with pytest.raises(UserError, match="one phone tier, not a 'words' tier"):
        read_alignment(full, "words")


# ----------------------------------------------------------------------------------------------
# Malformed files


@pytest.mark.parametrize("name, text, problem", [
    ("bad.phn", "0 2400 h#\n2400 x sh\n", r"Line 2 of alignment file .*bad\.phn has 'x'"),
    ("back.PHN", "0 2400 h#\n2400 100 sh\n", r"Line 2 of alignment file .*back\.PHN ends"),
    ("short.phn", "0 2400\n", r"Line 1 of alignment file .*short\.phn needs"),
    ("fest.lab", "#\n0.1 125 a\n0.05 125 b\n", r"Line 3 of alignment file .*fest\.lab ends"),
    ("fest2.lab", "#\nabc 125 a\n", r"Line 2 of .*fest2\.lab has 'abc'"),
    ("hts.lab", "0 100 a\n100 2.5 b\n", r"Line 2 of .*hts\.lab has '2\.5'"),
    ("junk.TextGrid", "this is not a TextGrid\n", r"Cannot read TextGrid .*junk\.TextGrid"),
])
def test_malformed_files_name_file_and_line(tmp_path, name, text, problem):
    path = write_text(tmp_path / name, text)
    with pytest.raises(UserError, match=problem):
        read_alignment(path)


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(UserError, match=r"nope\.phn does not exist"):
        read_alignment(tmp_path / "nope.phn")
    with pytest.raises(UserError, match=r"nope\.TextGrid does not exist"):
        read_alignment(tmp_path / "nope.TextGrid")
    with pytest.raises(UserError, match=r"unknown type '\.ctm'"):
        read_alignment(tmp_path / "a.ctm")


# ----------------------------------------------------------------------------------------------
# Phone folding


def test_class_list_and_packaged_table():
    assert len(PHONE_CLASSES) == 41 and PHONE_CLASSES[-2:] == ("sil", "spn")
    assert list(PHONE_CLASSES[:39]) == sorted(PHONE_CLASSES[:39])
    for name in PACKAGED_SETS:
        folding = PhoneFolding.load(name)
        assert folding.classes == PHONE_CLASSES and folding.path == FOLDING_FILE
        assert set(folding.table.values()) <= set(PHONE_CLASSES) | {"-"}
    arpabet = PhoneFolding.load("arpabet")
    assert all(arpabet.fold(c.upper()) == c for c in PHONE_CLASSES[:39])


def test_arpabet_stress_case_and_noise():
    arpabet = PhoneFolding.load("arpabet")
    assert [arpabet.fold(p) for p in ("AH0", "AH1", "ah2", "ER0", "K", "zh")] == [
        "ah", "ah", "ah", "er", "k", "zh"]
    assert [arpabet.fold(p) for p in ("SIL", "sil", "sp", "pau", "", "  ")] == ["sil"] * 6
    assert [arpabet.fold(p) for p in ("spn", "+NSN+", "+SPN+", "+BREATH+", "+um+")] == ["spn"] * 5
    assert arpabet.fold("Q") is None
    with pytest.raises(UserError, match="Phone 'AH9' is not in the 'arpabet' folding"):
        arpabet.fold("AH9")


TIMIT61 = ("aa ae ah ao aw ax ax-h axr ay b bcl ch d dcl dh dx eh el em en eng epi er ey f g gcl "
           "h# hh hv ih ix iy jh k kcl l m n ng nx ow oy p pau pcl q r s sh t tcl th uh uw ux v w "
           "y z zh").split()


def test_timit_folding():
    timit = PhoneFolding.load("timit61")
    assert len(TIMIT61) == 61 and set(timit.table) == set(TIMIT61)
    closures = {"bcl": "b", "dcl": "d", "gcl": "g", "pcl": "p", "tcl": "t", "kcl": "k"}
    assert {c: timit.fold(c) for c in closures} == closures
    others = {"h#": "sil", "pau": "sil", "epi": "sil", "ax": "ah", "ax-h": "ah", "axr": "er",
              "ix": "ih", "ux": "uw", "el": "l", "em": "m", "en": "n", "eng": "ng", "nx": "n",
              "hv": "hh", "dx": "d", "ao": "ao", "zh": "zh", "H#": "sil", "BCL": "b"}
    assert {p: timit.fold(p) for p in others} == others
    assert timit.fold("q") is None


def test_fold_segments_merges_and_excludes():
    timit = PhoneFolding.load("timit61")
    segments = [Segment(0.0, 0.1, "h#"), Segment(0.1, 0.15, "bcl"), Segment(0.15, 0.2, "b"),
                Segment(0.2, 0.3, "ax"), Segment(0.3, 0.35, "q"), Segment(0.35, 0.4, "ah"),
                (0.4, 0.5, "ix"), Segment(0.5, 0.6, "pau"), Segment(0.6, 0.7, "h#")]
    assert timit.fold_segments(segments) == [
        Segment(0.0, 0.1, "sil"), Segment(0.1, 0.2, "b"),    # closure + burst: one b
        Segment(0.2, 0.3, "ah"), Segment(0.35, 0.4, "ah"),   # the q gap keeps them apart
        Segment(0.4, 0.5, "ih"), Segment(0.5, 0.7, "sil")]


def test_espeak_folding_of_real_synthesis():
    folding = PhoneFolding.load("espeak")
    for voice in ("en-us", "en"):
        result = espeak.synthesize("The cat sat on the mat.", voice=voice)
        folded = [folding.fold(label) for _, _, label in result.phones]
        assert folded[:5] == ["dh", "ah", "k", "ae", "t"]
        assert folded[5:8] == ["s", "ae", "t"] and folded[-4:] == ["m", "ae", "t", "sil"]
    # Every voice of the demo corpus, on its whole vocabulary: nothing unknown.
    text = " ".join(demo.make_sentences(40, seed=1))
    for speaker in demo.SPEAKERS:
        result = espeak.synthesize(text, voice=speaker.voice)
        segments = [Segment(*phone) for phone in result.phones]
        folded = folding.fold_segments(segments)
        assert {s.label for s in folded} <= set(PHONE_CLASSES)
        assert len(folded) > 0.8 * len(segments)


def test_espeak_normalisation():
    folding = PhoneFolding.load("espeak")
    assert [folding.fold(p) for p in ("'aU", ",aU", "aU", "%aU", "=aU")] == ["aw"] * 5
    assert [folding.fold(p) for p in ("D", "d", "T", "t", "S", "s", "Z", "z", "N", "n")] == [
        "dh", "d", "th", "t", "sh", "s", "zh", "z", "ng", "n"]
    assert [folding.fold(p) for p in ("@2", "3", "0", "dZ", "i:", "'3:", "@L", "tS")] == [
        "ah", "er", "aa", "jh", "iy", "er", "l", "ch"]
    assert [folding.fold(p) for p in ("_", "_:", "_!", "_^_", "")] == ["sil"] * 5
    with pytest.raises(UserError) as info:
        folding.fold("'Q")
    assert str(info.value) == (
        f"Phone ''Q' is not in the 'espeak' folding of {FOLDING_FILE}; add a line "
        f"'espeak<TAB>Q<TAB><class>' to a copy of {FOLDING_FILE} and pass that copy as `folding` "
        "(or choose another phone set).")


def test_user_table(tmp_path):
    own = write_text(tmp_path / "mine.tsv", "# my phones\nset\tlabel\tclass\n"
                     "mine\tAA\taa\nmine\tsil\tsil\n\n# comment\nmine\tX\t-\nother\tb\tb\n")
    mine = PhoneFolding.load("mine", own)
    assert mine.classes == PHONE_CLASSES and mine.path == own
    assert [mine.fold("AA"), mine.fold("sil"), mine.fold("X"), mine.fold("")] == [
        "aa", "sil", None, "sil"]
    with pytest.raises(UserError, match=r"Phone 'aa' is not in the 'mine' folding of .*mine\.tsv"):
        mine.fold("aa")   # other set names match exactly
    custom = write_text(tmp_path / "vowels.tsv", "set\tlabel\tclass\nclasses\tV\tV\n"
                        "classes\tC\tC\nsimple\ta\tV\nsimple\tt\tC\n")
    simple = PhoneFolding.load("simple", custom)
    assert simple.classes == ("V", "C")
    assert simple.fold_segments([(0, 1, "a"), (1, 2, "a"), (2, 3, "t")]) == [
        Segment(0, 2, "V"), Segment(2, 3, "C")]


@pytest.mark.parametrize("text, problem", [
    ("set\tlabel\tclass\nmine\ta\tah\nmine\tb\tbee\n",
     r"Line 3 of phone folding table .*bad\.tsv maps 'b' to 'bee', which is not a class"),
    ("set\tlabel\tclass\nmine\ta\tah\n# c\nmine\ta\taa\n",
     r"Line 4 of .*bad\.tsv repeats label 'a' of set 'mine' \(first on line 2\)"),
    ("set\tlabel\tclass\narpabet\tSIL\tsil\narpabet\tsil\tsil\n",
     r"Line 3 .* repeats label 'sil' of set 'arpabet'"),   # arpabet is case-insensitive
    ("set\tlabel\tclass\nmine\ta ah\n", r"Line 2 of .*bad\.tsv does not have three"),
    ("mine\ta\tah\n", r"bad\.tsv does not start with the header"),
])
def test_bad_tables(tmp_path, text, problem):
    path = write_text(tmp_path / "bad.tsv", text)
    with pytest.raises(UserError, match=problem):
        PhoneFolding.load("mine", path)


def test_unknown_set_and_missing_table(tmp_path):
    with pytest.raises(UserError, match=r"Phone set 'ipa' is not in .*phone_folding\.tsv; "
                                        r"choose one of: arpabet, timit61, espeak\."):
        PhoneFolding.load("ipa")
    with pytest.raises(UserError, match=r"missing\.tsv does not exist"):
        PhoneFolding.load("arpabet", tmp_path / "missing.tsv")


def test_guess_phone_set():
    assert guess_phone_set(["h#", "sh", "ix", "hv", "bcl", "b", "q"]) == "timit61"
    assert guess_phone_set(["SIL", "HH", "AH0", "L", "OW1"]) == "arpabet"
    assert guess_phone_set(["sil", "k", "ae", "t", ""]) == "arpabet"  # tie: arpabet
    result = espeak.synthesize("Measure the thick treasure.", voice="en-us")
    assert guess_phone_set(label for _, _, label in result.phones) == "espeak"
    assert guess_phone_set([]) == "arpabet"
