// my scene
