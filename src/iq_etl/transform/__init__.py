"""Stage 3: dbt build of the models in dbt_project/ (in-process, through the chDB seam when embedded)."""
