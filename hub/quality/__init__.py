"""Quality evaluation of generators and archives: the analyses of Segal et al. and Han et al.

``imageset`` loads NIH-layout folders (a site's real images, a synthetic archive);
``segal`` holds the Fréchet-distance analyses (zero measure, class distances, MDS,
dendrogram, real versus synthetic); ``prevalence`` the label prevalence with
bootstrap CIs; ``han`` the pathology correlation matrix, transitions and
difference maps; ``report`` renders everything into one HTML file.
"""

__all__: list[str] = []
