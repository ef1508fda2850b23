"""Deployments: several models behind one OpenAI endpoint, each in replicas that Ray Serve scales.

:mod:`.spec` (the typed spec, GALE's body via :mod:`.gale`) and :mod:`.plan` (checked against the store)
need only pydantic; :mod:`.ray_app` and the modules it runs (:mod:`.replica`, :mod:`.endpoint`) need the
``ray`` extra.
"""
