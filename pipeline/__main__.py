from pipeline.cli.main import main

main(prog_name="letterpress")
