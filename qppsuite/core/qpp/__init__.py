"""QPP, the plugin-to-plugin system: unique names, exports, callbacks, requirements.

This is the Python form of the QEMU "plugin-to-plugin" series.  Every analysis
plugin has a unique name, may export functions, may create named callbacks that
others register on, and may require other plugins, which load first.  The host
(the machine, or a test) owns one :class:`QPP` and drives the lifecycle:
``load_all`` -> ``start_all`` -> ``stop_all(reason)`` -> ``unload_all``.

Everything a user can get wrong fails *at load time* with a
:class:`~qppsuite.errors.PluginError` that names what was asked for and what
exists, so a typo never surfaces as a crash an hour into a guest run.  Two hot
paths are kept free of bookkeeping because the core fires ``on_svc`` on every
system call: running a :class:`Callback` is a loop over a tuple, and an imported
function is the exporting plugin's bound method itself.

This package knows no plugin by name and imports nothing from the machine; the
core exposes itself through :meth:`QPP.add_builtin` like any other plugin.  One
module per concern, each importing at run time only those listed before it:

- ``failures``: a plugin's exception, reported with its name (:class:`PluginFailure`);
- ``args``: declared arguments and ``-p plugin:key=value`` (:class:`Arg`);
- ``exports``: functions plugins offer each other (:func:`export`);
- ``context``: the run's facts every plugin reads (:class:`RunContext`);
- ``specs``: what a callback passes, checked when a function registers (:class:`CallbackSpec`);
- ``plugin``: the :class:`Plugin` base class and the checks a plugin class passes;
- ``callbacks``: named callbacks others register on (:class:`Callback`);
- ``loading``: where plugins come from, by name, path or class (:func:`discover`, :func:`resolve`);
- ``registry``: the manager of one run (:class:`QPP`).

Import from ``qppsuite.core.qpp``; the modules are its layout, not its interface.
"""

from qppsuite.core.qpp.args import Arg, PluginArgs, bind_args, parse_plugin_args, parse_plugin_list
from qppsuite.core.qpp.callbacks import Callback
from qppsuite.core.qpp.context import RunContext
from qppsuite.core.qpp.exports import export, exported_functions
from qppsuite.core.qpp.failures import PluginCallbackError, PluginFailure, log_failure
from qppsuite.core.qpp.loading import ENTRY_POINT_GROUP, PluginSource, discover, discover_all, resolve
from qppsuite.core.qpp.plugin import API_VERSION, Plugin, plugin_description
from qppsuite.core.qpp.registry import QPP
from qppsuite.core.qpp.specs import CallbackSpec

__all__ = [
    "API_VERSION",
    "ENTRY_POINT_GROUP",
    "QPP",
    "Arg",
    "Callback",
    "CallbackSpec",
    "Plugin",
    "PluginArgs",
    "PluginCallbackError",
    "PluginFailure",
    "PluginSource",
    "RunContext",
    "bind_args",
    "discover",
    "discover_all",
    "export",
    "exported_functions",
    "log_failure",
    "parse_plugin_args",
    "parse_plugin_list",
    "plugin_description",
    "resolve",
]
