# Multiplication table program


def print_times_table(base):
    """Print base x 1 up to base x 10 and return the total of the products."""
    total = 0
    for multiplier in range(1, 11):
        product = base * multiplier
        print(f"{base} x {multiplier} = {product}")
        total += product
    return total


chosen_number = int(input("Choose a number: "))
grand_total = print_times_table(chosen_number)
print("Total of all products:", grand_total)
