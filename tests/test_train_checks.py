"""sagepose.train.checks: settings this build cannot run fail before any work, with the key that says why."""
import pytest

from sagepose.config import ConfigError, load_config
from sagepose.train.checks import check_run


@pytest.mark.parametrize("override, message", [
    ("trainer.precision=16-mixed", "bf16-mixed"),
    ("trainer.max_nonfinite_steps=0", "at least 1"),
    ("optim.ema_decay=1.0", "0 = off"),
    ("trainer.fsdp_cpu_offload=true", "needs trainer.strategy=fsdp"),
])
def test_unsupported_settings_fail_before_any_work(override, message):
    with pytest.raises(ConfigError, match=message):
        check_run(load_config(None, [override]))


def test_ema_with_fsdp_is_refused():
    with pytest.raises(ConfigError, match="unsharded"):
        check_run(load_config(None, ["trainer.strategy=fsdp", "optim.ema_decay=0.999"]))
