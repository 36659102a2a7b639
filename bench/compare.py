"""Old entry point: ``python bench/compare.py ...`` is ``rnnengine bench ...`` (rnnengine/bench/)."""
import importlib.util, os, sys  # noqa: E401
spec = importlib.util.find_spec("rnnengine")  # an installed rnnengine with the bench wins, else this checkout
if spec is None or not os.path.exists(os.path.join(list(spec.submodule_search_locations)[0], "bench", "compare.py")):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rnnengine.bench import main  # noqa: E402
sys.exit(main())
