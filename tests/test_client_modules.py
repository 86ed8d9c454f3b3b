"""research_kit.client is split into retry (errors, retries), client and batch: the old import paths keep working,
whichever module a process imports first."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("InferenceAPI, InferenceError, ProviderError, RateLimitExhausted, RequestRejected, InvalidResponseError, "
         "BudgetExceeded, ModelPool, ModelConfigError, to_dataframe, check_model, default_is_valid")


@pytest.mark.parametrize("first", ["research_kit.client", "research_kit.batch", "research_kit.retry"])
def test_public_names_whatever_is_imported_first(first):
    code = (f"import {first}\n"
            f"from research_kit.client import {NAMES}\n"
            "import research_kit.client as c\n"
            "assert all(hasattr(InferenceAPI, m) for m in ('acall', 'call', 'abatch', 'batch', 'batch_df', 'usage_log'))\n"
            "assert InferenceError.__module__ == 'research_kit.retry' and to_dataframe.__module__ == 'research_kit.batch'\n"
            "assert not [n for n in c.__all__ if n.startswith('_')] and 'to_dataframe' in c.__all__\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
