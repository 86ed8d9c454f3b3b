def ask_for_number(question):
    """Keep asking the question until the user types a whole number."""
    reply = input(question)
    while not reply.isdigit():
        reply = input("Please type a whole number: ")
    return int(reply)


def print_table(number):
    """Print the ten rows of the table and return their sum."""
    total = 0
    for step in range(1, 11):
        print(f"{number} x {step} = {number * step}")
        total += number * step
    return total


table_number = ask_for_number("Which table? ")
print("Sum of the table:", print_table(table_number))
