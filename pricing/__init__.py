"""Pure actuarial library of the pay-as-you-live platform: pandas/numpy in, pandas/numpy out.

Imports nothing from ``telematics`` or ``simulator``, no numba, no database. Modules:

- ``plan``: the immutable, versioned rating plan (``load_plan``, ``default_plan``,
  ``Plan.new_version``, ``Plan.sha256``).
- ``rating``: ``reprice(policies, plan)``, vectorised premiums for many policy periods.
- ``breakdown``: ``price_with_breakdown`` (premium plus each factor in money, summing to
  the cent), ``breakdown_lines``, ``change_from_previous``, ``coach``.
- ``credibility``: Buhlmann-Straub (``buhlmann_straub``, ``credibility_weight``).
- ``glm``: ``FrequencyGLM``, ``SeverityGLM``, ``PurePremiumGLM`` on glum; ``calibrate``.
- ``validate``: Gini, lift, O/E, deviance, fairness audit; ``validate(data, plan)``.
- ``audit``: ``audit_records`` and ``replay`` to the cent.
- ``cli``: ``main(argv)`` for ``price calibrate | validate | reprice | replay``.
"""
