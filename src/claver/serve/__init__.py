"""``claver serve``: a local web page and JSON API for one loaded model.

:class:`Service` (:mod:`claver.serve.service`) does the work without HTTP;
:func:`create_app` (:mod:`claver.serve.app`) wraps it in a FastAPI app
(``pip install "claver[serve]"``). Names are imported on first use, so importing this
package needs neither FastAPI nor a model.
"""

from __future__ import annotations

from claver.lazy import lazy_attributes

_NAMES = {"create_app": "claver.serve.app", "BodyLimit": "claver.serve.app",
          "Service": "claver.serve.service", "ServeOptions": "claver.serve.service",
          "RequestError": "claver.serve.service"}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_attributes(__name__, _NAMES, globals())
