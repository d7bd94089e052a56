"""The expectation tables: the shipped ones are sound, and a broken one is reported by line."""
import pytest

from ipcmatrix import catalogue, expectations

from table_files import TableFiles

KNOWN = {"dgram.zero_length", "dgram.max_size", "stream.msg_nosignal"}
HEADER = '[platform]\nsystem = "Linux"\n'


def write(tmp_path, body, name="linux.toml"):
    return TableFiles(tmp_path, "Linux", name, KNOWN).write(body)


def problems_in(path):
    return TableFiles(path.parent, "Linux", path.name, KNOWN).problems_in(path)


def test_the_shipped_tables_are_valid_and_name_only_known_keys():
    tables = expectations.load_all(known_keys=set(catalogue.catalogue()))
    assert {t.name for t in tables} >= {"linux", "macos", "freebsd"}


def test_every_shipped_linux_entry_for_a_declared_key_exists():
    linux = next(t for t in expectations.load_all() if t.name == "linux")
    missing = sorted(set(catalogue.catalogue()) - set(linux.entries))
    assert missing == [], f"keys with no Linux expectation: {missing}"


def test_an_unknown_key_is_reported_with_file_line_and_neighbours(tmp_path):
    path = write(tmp_path, '''
        ["dgram.zero_lenght"]
        expect = 0
        ref = "x"
        evidence = "observed"
    ''')
    [problem] = problems_in(path)
    assert problem.startswith(f"{path}:4: unknown observation key 'dgram.zero_lenght'")
    assert "dgram.zero_length" in problem


def test_a_missing_ref_and_a_bad_evidence_name_their_lines(tmp_path):
    path = write(tmp_path, '''
        ["dgram.zero_length"]
        expect = 0
        evidence = "guessed"
    ''')
    problems = problems_in(path)
    assert any(p.startswith(f"{path}:4:") and "needs a ref" in p for p in problems)
    assert any(p.startswith(f"{path}:6:") and "evidence must be" in p for p in problems)


def test_a_malformed_rule_names_the_line_of_the_rule(tmp_path):
    path = write(tmp_path, '''
        ["dgram.max_size"]
        ref = "x"
        evidence = "source"
        formula = "__import__('os')"
    ''')
    [problem] = problems_in(path)
    assert problem.startswith(f"{path}:7:") and "may be called" in problem


def test_an_unknown_field_and_a_bad_release_condition_are_reported(tmp_path):
    path = write(tmp_path, '''
        [["stream.msg_nosignal"]]
        expect = "ok"
        release = "eleven"
        refs = "typo"
        ref = "x"
        evidence = "source"
    ''')
    problems = problems_in(path)
    assert any(":6:" in p and "release condition" in p for p in problems)
    assert any(":7:" in p and "unknown field 'refs'" in p for p in problems)


def test_invalid_toml_names_the_line(tmp_path):
    path = write(tmp_path, '''
        ["dgram.zero_length"]
        expect = = 0
    ''')
    [problem] = problems_in(path)
    assert problem.startswith(f"{path}:5: not valid TOML")


def test_release_conditions_pick_the_entry_for_the_release(tmp_path):
    path = write(tmp_path, '''
        [["stream.msg_nosignal"]]
        expect = "unsupported"
        release = "<11"
        ref = "xnu-6153 has no MSG_NOSIGNAL"
        evidence = "source"

        [["stream.msg_nosignal"]]
        expect = "ok"
        release = ">=11"
        ref = "xnu-7195 adds it"
        evidence = "source"
    ''')
    table = expectations.load(path, known_keys=KNOWN)
    assert table.entry_for("stream.msg_nosignal", "10.15.7")["expect"] == "unsupported"
    assert table.entry_for("stream.msg_nosignal", "14.5")["expect"] == "ok"
    assert table.where("stream.msg_nosignal", 1).endswith(":10")


@pytest.mark.parametrize("condition, release, fits", [
    (">=13, <15", "14.5", True), (">=13, <15", "15.0", False), ("14", "14.2", True),
    ("14", "15.0", False), ("<14", "13.6.1", True), (">=6.1", "6.18.44-fc-v657", True),
    (">=14.1", "14.1-RELEASE-p3", True), (">=14.2", "14.1-RELEASE-p3", False),
])
def test_release_matches_compares_version_numbers(condition, release, fits):
    assert expectations.release_matches(condition, release) is fits


def test_an_unknown_platform_says_how_to_record_it(tmp_path):
    write(tmp_path, "")
    tables = expectations.load_all(tmp_path)
    with pytest.raises(expectations.UnknownPlatform) as caught:
        expectations.table_for({"system": "SunOS", "name": "sunos", "release": "5.11",
                                "machine": "i86pc"}, tables)
    assert "ipcmatrix bless REPORT.json --platform sunos-5" in str(caught.value)


@pytest.mark.parametrize("body, complaint", [
    ('["dgram.zero_length"]\nexpect = 0\nref = 5\nevidence = "source"\n', "ref must be text"),
    ('["dgram.zero_length"]\nexpect = 0\nref = "x"\nevidence = "source"\nmachine = 5\n',
     "machine must be text or a list"),
    ('["dgram.zero_length"]\nexpect = 0\nref = "x"\nevidence = "source"\nrelease = 14\n',
     "release condition 14"),
    ('["dgram.zero_length"]\nexpect = 0\nref = "x"\nevidence = "source"\nnote = ["a"]\n',
     "note must be text"),
    ('"dgram.zero_length" = 5\n', "unknown platform field 'dgram.zero_length'"),
    ('["dgram.zero_length"]\nexpect = { a = 1 }\nref = "x"\nevidence = "source"\n', "not a table"),
])
def test_fields_of_the_wrong_type_are_named(tmp_path, body, complaint):
    problems = problems_in(write(tmp_path, body))
    assert any(complaint in p for p in problems), problems


def test_a_platform_that_is_not_a_table_is_an_error_not_a_crash(tmp_path):
    path = tmp_path / "odd.toml"
    path.write_text('platform = 5\n')
    assert "platform must be a [platform] table" in problems_in(path)[0]


def test_a_truncated_table_names_its_file_and_line(tmp_path):
    path = write(tmp_path, '["dgram.zero_length"]\nexpect = 0\nref = "unterminated\n')
    [problem] = problems_in(path)
    assert problem.startswith(f"{path}:5: not valid TOML")


def test_a_huge_table_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "huge.toml"
    path.write_text(HEADER + "# " + "x" * expectations.MAX_TABLE_BYTES + "\n")
    assert "larger than a table can be" in problems_in(path)[0]


def test_deeply_nested_values_are_an_error_not_a_crash(tmp_path):
    path = write(tmp_path, '["dgram.zero_length"]\nexpect = ' + "[" * 5000 + "]" * 5000 +
                 '\nref = "x"\nevidence = "source"\n')
    assert problems_in(path)


def test_linux_refs_cite_primary_sources_not_our_notes():
    """A ref names what a user can read (kernel file and function, man page, commit), never
    the team's research notes ("linux-facts B10"), which no user has."""
    text = (expectations.TABLES_DIR / "linux.toml").read_text()
    cited = [line for line in text.splitlines() if "-facts" in line and not line.startswith("#")]
    assert cited == []


# --- what a run reads: its own system's tables ---------------------------------------------

def test_a_run_reads_its_own_systems_tables_and_passes_over_a_broken_other(tmp_path):
    (tmp_path / "linux.toml").write_text(HEADER + '["dgram.zero_length"]\nexpect = 0\nref = "x"\n'
                                         'evidence = "observed"\n')
    (tmp_path / "macos.toml").write_text('[platform]\nsystem = "Darwin"\n\n["dgram.zero_length"]\n'
                                         'expect = = 0\n')
    [table] = expectations.load_for({"system": "Linux"}, tmp_path, known_keys=KNOWN)
    assert table.name == "linux" and "dgram.zero_length" in table.entries
    with pytest.raises(expectations.TableError) as broken:     # check reads every table
        expectations.load_all(tmp_path, known_keys=KNOWN)
    assert any("macos.toml:5" in problem for problem in broken.value.problems)
    with pytest.raises(expectations.TableError):               # a run on macOS reads it
        expectations.load_for({"system": "Darwin"}, tmp_path, known_keys=KNOWN)


@pytest.mark.parametrize("text", [
    '[platform]\nsystem = "Darwin"\n[platform]\nsystem = "Linux"\n',   # two blocks: not plain
    'platform.system = "Linux"\n',                                      # dotted keys
    '[platform]\nobserved_on = [\n["x"],\n]\nsystem = "Linux"\n',        # a line like a header
    'system = "Linux"\n',                                              # no block at all
])
def test_a_platform_block_that_is_not_plain_makes_the_table_read_whole(tmp_path, text):
    path = tmp_path / "odd.toml"
    path.write_text(text)
    assert expectations.platform_block_of(path) is None


def test_the_shipped_tables_platform_blocks_read_alone_are_what_a_whole_read_gives():
    for table in expectations.load_all():
        assert expectations.platform_block_of(table.path) == table.platform, table.path
