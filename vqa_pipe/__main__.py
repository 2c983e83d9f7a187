from vqa_pipe.cli import main

main()
