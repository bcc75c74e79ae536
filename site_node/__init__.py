"""The site node: everything that runs inside a hospital.

Ingestion, the preprocessing cache, patient-level splits, the discriminator,
PGGAN and labeller training, audits, the pre-publication gate, publishing, and
the Flower ClientApp. Real pixels, patient ids and the discriminator stay here.
"""

__all__: list[str] = []
