"""
NIGHTOWL_PROFILE=FILE (``nightowl bench drain --profile``): run a worker's
``main`` under cProfile and dump the figures to FILE when it ends.
"""

import os


def run(main, environ=None):
    out = (os.environ if environ is None else environ).get("NIGHTOWL_PROFILE")
    if not out:
        return main()
    import cProfile
    profile = cProfile.Profile()
    profile.enable()
    try:
        return main()
    finally:
        profile.disable()
        profile.dump_stats(out)
