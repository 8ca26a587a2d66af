"""nightowl.dsn: the one mask_dsn (keyword and URL DSNs, quoted and unquoted passwords)."""

from nightowl.dsn import mask_dsn


def test_mask_dsn():
    assert mask_dsn("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert mask_dsn("host=h password='a b' user=u") == "host=h password=*** user=u"


def test_mask_dsn_is_strict():
    assert mask_dsn("host=h PASSWORD = s3cret user=u") == "host=h PASSWORD = *** user=u"
    assert mask_dsn("host=h password='it\\'s' user=u") == "host=h password=*** user=u"
    assert mask_dsn("postgres://:s3cret@h/db") == "postgres://:***@h/db"
    assert mask_dsn("postgresql://u@h/db?password=s3cret") == "postgresql://u@h/db?password=***"
    assert "s3cret" not in mask_dsn('could not connect: "host=h password=s3cret"')
    assert mask_dsn(None) == "" and mask_dsn("host=h user=u") == "host=h user=u"
